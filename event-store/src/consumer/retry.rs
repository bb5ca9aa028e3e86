//! How a failed batch is retried: in place while the database is unreachable, at once on
//! fresh state after a race, otherwise split into single messages (and a single one settled).

use std::time::Duration;

use super::batch::Failure;
use super::HandleError;
use crate::StoreError;

/// How a batch's failure is retried.
pub(super) enum Retry {
    /// The database is unreachable: wait and retry in place, spending no delivery.
    Unreachable(String),
    /// A concurrent write: retry at once on fresh state.
    Race(String),
    /// Split the batch, or settle the single message.
    No,
}

pub(super) fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Handler(name, HandleError::Transient(e)) => format!("{name}: {e:#}"),
        Failure::Handler(name, HandleError::Poison(reason)) => format!("{name}: {reason}"),
        Failure::Handler(name, HandleError::Conflict(reason)) => format!("{name}: {reason}"),
        Failure::Sql(e) => format!("recording in the inbox: {e}"),
    }
}

pub(super) fn retry_of(failure: &Failure) -> Retry {
    match failure {
        Failure::Sql(e) if crate::error::is_unavailable(e) => Retry::Unreachable(e.to_string()),
        Failure::Sql(e) if sqlstate(e).as_deref().is_some_and(is_race) => {
            Retry::Race(e.to_string())
        }
        Failure::Sql(_) => Retry::No,
        Failure::Handler(_, HandleError::Conflict(reason)) => Retry::Race(reason.clone()),
        Failure::Handler(name, HandleError::Transient(e)) if caused_by_unreachable_database(e) => {
            Retry::Unreachable(format!("{name}: {e:#}"))
        }
        Failure::Handler(..) => Retry::No,
    }
}

/// A short, growing, jittered pause between retries of a batch that met a concurrent write,
/// so two writers racing on one stream stop colliding in lockstep.
pub(super) async fn race_pause(attempt: u32) {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) % 500)
        .unwrap_or(0);
    let micros = 100 * u64::from(attempt) + jitter;
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

pub(super) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Serialization failure, deadlock (class 40) or unique violation (23505): two transactions
/// raced, and doing it again on fresh state settles it.
pub(super) fn is_race(code: &str) -> bool {
    code.starts_with("40") || code == "23505"
}

/// Whether a handler's failure comes from the database being unreachable.
fn caused_by_unreachable_database(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
            return crate::error::is_unavailable(e);
        }
        match cause.downcast_ref::<StoreError>() {
            Some(StoreError::Database(e)) => crate::error::is_unavailable(e),
            _ => false,
        }
    })
}
