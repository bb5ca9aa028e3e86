//! What order-service does when product-service's events arrive (besides keeping its
//! catalogue, which is a projection: see `projections::catalog`).
//!
//! - [`reservation`]: a reservation confirmed or rejected confirms or rejects the order.

pub mod reservation;

use event_store::consumer::HandleError;

/// A database error while handling a foreign event: a data exception (SQLSTATE class 22, such
/// as a NUL character in a text) fails the same way on every delivery, so it is poison; all
/// else (connections, conflicts, timeouts) is worth retrying.
pub(crate) fn database_error(error: sqlx::Error, doing: &str) -> HandleError {
    let data_exception = matches!(
        &error,
        sqlx::Error::Database(e) if e.code().is_some_and(|c| c.starts_with("22"))
    );
    if data_exception {
        HandleError::Poison(format!("{doing}: {error}"))
    } else {
        HandleError::Transient(anyhow::Error::new(error).context(doing.to_owned()))
    }
}
