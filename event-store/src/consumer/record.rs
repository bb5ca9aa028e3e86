//! Recording a batch, and how a failed one is retried: in place while the database is
//! unreachable, at once on fresh state after a race, otherwise split into single messages (and a
//! single one settled).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::batch::{self, Committed, Failure};
use super::HandleError;
use super::{settle, Consumer, Delivery, CONFLICT_RETRIES};
use crate::envelope::ForeignEvent;
use crate::retry::Backoff;
use crate::StoreError;

/// How recording a batch ended, after the retries in place.
pub(super) enum Recorded {
    Committed(Committed),
    /// Rolled back by a handler's failure or the consumer's own SQL.
    Failed(Failure),
    /// Shut down while the database was unreachable: nothing was recorded.
    Stopped,
}

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
        Failure::Handler(name, HandleError::NewerSchema(reason)) => format!("{name}: {reason}"),
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
async fn race_pause(attempt: u32) {
    crate::retry::race_pause(
        attempt,
        Duration::from_micros(100),
        Duration::from_micros(500),
    )
    .await;
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

impl Consumer {
    /// Runs the batch's transaction, retrying in place while the database is unreachable
    /// (keeping the messages from redelivery) and at once after a race.
    pub(super) async fn record(
        &self,
        deliveries: &[Delivery],
        shutdown: &CancellationToken,
    ) -> Recorded {
        let events: Vec<&ForeignEvent> = deliveries.iter().map(|d| &d.event).collect();
        let span = tracing::debug_span!("batch", messages = events.len());
        let mut backoff = Backoff::default();
        let mut races = 0;
        loop {
            let failure = match batch::record(&self.store, &self.handlers, &events)
                .instrument(span.clone())
                .await
            {
                Ok(committed) => {
                    if committed.appended {
                        // The handlers appended events: wake the relay.
                        self.store.notify_appended();
                    } else if !committed.plan.apply.is_empty() {
                        // Recorded only: a replica may hold the successors parked.
                        self.store.wakeup.recorded();
                    }
                    return Recorded::Committed(committed);
                }
                Err(failure) => failure,
            };
            match retry_of(&failure) {
                Retry::Unreachable(error) => {
                    tracing::warn!(error, "consumer cannot reach the database; retrying");
                    for delivery in deliveries {
                        settle::in_progress(&delivery.message).await;
                    }
                    backoff.wait(shutdown).await;
                    if shutdown.is_cancelled() {
                        return Recorded::Stopped;
                    }
                }
                Retry::Race(error) if races < CONFLICT_RETRIES => {
                    races += 1;
                    tracing::debug!(races, error, "a concurrent write; recording again");
                    race_pause(races).await;
                }
                Retry::Race(_) | Retry::No => return Recorded::Failed(failure),
            }
        }
    }
}
