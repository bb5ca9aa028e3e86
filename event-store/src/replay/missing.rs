//! Read models that are missing while their events are not: a database restored from its
//! events alone, or one whose read-model tables were emptied by hand. Built at start, before
//! the service answers a read, so no read and no inline write meets a model without its rows.

use tokio_util::sync::CancellationToken;

use super::{rebuild, shadow, Options, RebuildError, Report, Source, Target};
use crate::EventStore;

/// Rebuilds `target` when every table it writes is empty and its source holds events. Only
/// read models nothing else catches up: inline projections and projections of the inbox
/// (a `Projector` catches up from its own checkpoint). `Ok(None)`: nothing was missing, or a
/// rebuild of it is already running elsewhere (another replica starting).
pub async fn rebuild_if_missing(
    store: &EventStore,
    target: &Target,
    shutdown: &CancellationToken,
) -> Result<Option<Report>, RebuildError> {
    let source = match target.source() {
        Source::Inline(_) => "events",
        Source::Inbox(_) => "inbox",
        Source::Store(_) => return Ok(None),
    };
    if !holds_rows(store, source).await? {
        return Ok(None);
    }
    for table in target.tables() {
        if holds_rows(store, table).await? {
            return Ok(None);
        }
    }
    tracing::warn!(
        projection = target.name(),
        "its tables are empty but its events are not: rebuilding it before serving"
    );
    match rebuild(store, target, &Options::default(), &|_| {}, shutdown).await {
        Ok(report) => Ok(Some(report)),
        Err(RebuildError::InProgress(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn holds_rows(store: &EventStore, table: &str) -> Result<bool, RebuildError> {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", shadow::ident(table));
    Ok(sqlx::query_scalar(&sql).fetch_one(store.pool()).await?)
}
