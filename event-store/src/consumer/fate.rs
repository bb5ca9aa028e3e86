//! What becomes of each message: one decision, made here and nowhere else, from what recording
//! its batch said, and carried out in one place ([`super::Consumer::carry_out`]).
//!
//! A batch's transaction either commits, and each message has a [`Verdict`] from the batch's
//! plan, or rolls back with a [`Failure`]. A failure is first asked whether the whole batch is
//! simply recorded again at once ([`retry_now`]): in place while the database is unreachable,
//! on fresh state after a race. If not, a batch of several is split and each message recorded
//! alone; a message alone that still fails gets its fate from the failure ([`Fate::failed`]).
//! Every path ends in exactly one [`Fate`] per message. The decisions are pure; the tests at
//! the bottom are their table.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use uuid::Uuid;

use super::batch::{Failure, Verdict};
use super::dead_letter::Kind;
use super::HandleError;
use crate::StoreError;

/// Delay before a nak'd message (predecessor missing, transient failure) is redelivered.
pub(crate) const NAK_DELAY: Duration = Duration::from_secs(1);

/// What becomes of one message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fate {
    /// Recorded with its effects in its batch's transaction: acknowledged.
    Applied,
    /// Recorded before (or earlier in the same batch): acknowledged without effect.
    Duplicate,
    /// Its stream's predecessor is not recorded yet (only `recorded` is): held unacknowledged,
    /// and recorded as soon as the predecessor is, by this process or a replica.
    Park { recorded: i64 },
    /// Handed back, to be delivered again after `delay`; each redelivery spends one of
    /// `max_deliver`.
    RetryLater { delay: Duration, why: Later },
    /// Recorded in `dead_letters`, published to the dead-letter subject, acknowledged.
    DeadLetter { kind: Kind, error: String },
    /// Another event is recorded at its stream version (`holder`, when known): dead-lettered
    /// as a version conflict once the producer has been asked which of the two is real.
    Conflict { holder: Option<Uuid> },
}

/// Why a message is handed back for later.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Later {
    /// Its predecessor is still missing and it cannot be parked (no room, or parked too long).
    Early { recorded: i64 },
    /// Handling it failed in a way that may pass (a timeout, a database error).
    Failed(String),
    /// It is written at a schema newer than this service reads: a rolling upgrade is under
    /// way. Redelivered slowly ([`super::ConsumerConfig::newer_schema_delay`]).
    NewerSchema(String),
    /// The consumer shut down while the database was unreachable: nothing was recorded.
    ShuttingDown,
}

impl Later {
    /// The `outcome` label counted for it, if any.
    pub fn outcome(&self) -> Option<&'static str> {
        match self {
            Later::Early { .. } | Later::Failed(_) => Some("retried"),
            Later::NewerSchema(_) => Some("newer_schema"),
            Later::ShuttingDown => None,
        }
    }
}

/// What the decision needs to know about the message itself.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts {
    /// How many times it has been delivered, this time included.
    pub delivered: i64,
    /// Whether this is its last delivery (`max_deliver` reached): handed back, it would be
    /// lost, so it is dead-lettered instead.
    pub last_delivery: bool,
    /// Whether it may be parked: it has not waited parked for [`super::PARK_LIMIT`] yet and
    /// there is room.
    pub may_park: bool,
    /// [`super::ConsumerConfig::newer_schema_delay`].
    pub newer_schema_delay: Duration,
}

impl Fate {
    /// The fate of a message whose batch committed, from its verdict in the batch's plan.
    pub fn committed(verdict: Verdict, holder: Option<Uuid>, event: Event, facts: Facts) -> Fate {
        match verdict {
            Verdict::Apply => Fate::Applied,
            Verdict::Duplicate => Fate::Duplicate,
            Verdict::Conflict => Fate::Conflict { holder },
            Verdict::Early { recorded } if facts.may_park => Fate::Park { recorded },
            Verdict::Early { recorded } if facts.last_delivery => Fate::DeadLetter {
                kind: Kind::OutOfOrder,
                error: format!(
                    "version {} of {} arrived, but only version {recorded} was ever recorded",
                    event.version, event.stream
                ),
            },
            Verdict::Early { recorded } => Fate::RetryLater {
                delay: NAK_DELAY,
                why: Later::Early { recorded },
            },
        }
    }

    /// The fate of a message recorded alone whose transaction rolled back, once
    /// [`retry_now`] has said no.
    pub fn failed(failure: &Failure, facts: Facts) -> Fate {
        let error = describe(failure);
        let newer_schema = matches!(failure, Failure::Handler(_, HandleError::NewerSchema(_)));
        match failure {
            Failure::Handler(_, HandleError::Poison(_)) => Fate::DeadLetter {
                kind: Kind::Poison,
                error,
            },
            _ if facts.last_delivery && newer_schema => Fate::DeadLetter {
                kind: Kind::NewerSchema,
                error: format!(
                    "still unreadable after {} deliveries: {error}",
                    facts.delivered
                ),
            },
            _ if facts.last_delivery => Fate::DeadLetter {
                kind: Kind::Exhausted,
                error: format!(
                    "still failing after {} deliveries: {error}",
                    facts.delivered
                ),
            },
            _ if newer_schema => Fate::RetryLater {
                delay: facts.newer_schema_delay,
                why: Later::NewerSchema(error),
            },
            _ => Fate::RetryLater {
                delay: NAK_DELAY,
                why: Later::Failed(error),
            },
        }
    }
}

/// The stream position a message claims, for the texts of its fate.
#[derive(Debug, Clone, Copy)]
pub(super) struct Event<'a> {
    pub stream: &'a str,
    pub version: i64,
}

/// How a rolled-back batch is recorded again at once, with all its messages.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Now {
    /// The database is unreachable: wait and retry in place, keeping the messages from
    /// redelivery, so no delivery is spent on an outage.
    InPlace(String),
    /// A concurrent write (a serialization failure, a unique violation, a reaction's version
    /// conflict): retry at once on fresh state, up to `races_allowed` times.
    FreshState(String),
}

/// Whether a rolled-back batch is recorded again at once, after `races` retries on fresh
/// state so far; `None`: split it, or give its single message its [`Fate::failed`].
pub(super) fn retry_now(failure: &Failure, races: u32, races_allowed: u32) -> Option<Now> {
    let now = match failure {
        Failure::Sql(e) if crate::error::is_unavailable(e) => Now::InPlace(e.to_string()),
        Failure::Sql(e) if sqlstate(e).as_deref().is_some_and(is_race) => {
            Now::FreshState(e.to_string())
        }
        Failure::Handler(_, HandleError::Conflict(reason)) => Now::FreshState(reason.clone()),
        Failure::Handler(name, HandleError::Transient(e)) if caused_by_unreachable_database(e) => {
            Now::InPlace(format!("{name}: {e:#}"))
        }
        Failure::Sql(_) | Failure::Handler(..) => return None,
    };
    match now {
        Now::FreshState(_) if races >= races_allowed => None,
        now => Some(now),
    }
}

/// A failure as text: which handler, and what it said.
pub(super) fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Handler(name, HandleError::Transient(e)) => format!("{name}: {e:#}"),
        Failure::Handler(name, HandleError::Poison(reason))
        | Failure::Handler(name, HandleError::Conflict(reason))
        | Failure::Handler(name, HandleError::NewerSchema(reason)) => format!("{name}: {reason}"),
        Failure::Sql(e) => format!("recording in the inbox: {e}"),
    }
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

pub(crate) async fn ack(message: &jetstream::Message) {
    if let Err(e) = message.ack().await {
        tracing::warn!(error = %e, "cannot acknowledge; the message will be redelivered");
    }
}

/// Hands the message back for redelivery after `delay`.
pub(crate) async fn nak_after(message: &jetstream::Message, delay: Duration) {
    if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
        tracing::warn!(error = %e, "cannot nak; redelivery waits for ack_wait");
    }
}

/// Tells the server the message is still being worked on, so it is not redelivered yet.
pub(crate) async fn in_progress(message: &jetstream::Message) {
    let _ = message.ack_with(AckKind::Progress).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: Event = Event {
        stream: "order-1",
        version: 5,
    };

    fn facts(last_delivery: bool, may_park: bool) -> Facts {
        Facts {
            delivered: if last_delivery { 10 } else { 2 },
            last_delivery,
            may_park,
            newer_schema_delay: Duration::from_secs(30),
        }
    }

    fn handler(error: HandleError) -> Failure {
        Failure::Handler("reserve".to_owned(), error)
    }

    fn kind(fate: &Fate) -> Option<Kind> {
        match fate {
            Fate::DeadLetter { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    #[test]
    fn a_committed_verdict_decides_apply_duplicate_or_conflict_whatever_the_deliveries() {
        let holder = Some(Uuid::now_v7());
        for facts in [facts(false, true), facts(true, false)] {
            let fate = |verdict| Fate::committed(verdict, holder, EVENT, facts);
            assert_eq!(fate(Verdict::Apply), Fate::Applied);
            assert_eq!(fate(Verdict::Duplicate), Fate::Duplicate);
            assert_eq!(fate(Verdict::Conflict), Fate::Conflict { holder });
        }
    }

    #[test]
    fn an_early_message_is_parked_else_handed_back_else_on_its_last_delivery_dead_lettered() {
        let early = Verdict::Early { recorded: 3 };
        let fate = |facts| Fate::committed(early, None, EVENT, facts);
        assert_eq!(fate(facts(false, true)), Fate::Park { recorded: 3 });
        // Parking comes first even on the last delivery: the predecessor may yet arrive.
        assert_eq!(fate(facts(true, true)), Fate::Park { recorded: 3 });
        assert_eq!(
            fate(facts(false, false)),
            Fate::RetryLater {
                delay: NAK_DELAY,
                why: Later::Early { recorded: 3 }
            }
        );
        let last = fate(facts(true, false));
        assert_eq!(kind(&last), Some(Kind::OutOfOrder));
        assert!(format!("{last:?}").contains("version 5 of order-1 arrived"));
    }

    #[test]
    fn poison_is_dead_lettered_at_once_and_other_failures_only_on_the_last_delivery() {
        let poison = handler(HandleError::Poison("no lines".to_owned()));
        assert_eq!(
            kind(&Fate::failed(&poison, facts(false, true))),
            Some(Kind::Poison)
        );

        let transient = handler(HandleError::Transient(anyhow::anyhow!("timed out")));
        assert_eq!(
            Fate::failed(&transient, facts(false, true)),
            Fate::RetryLater {
                delay: NAK_DELAY,
                why: Later::Failed("reserve: timed out".to_owned())
            }
        );
        assert_eq!(
            kind(&Fate::failed(&transient, facts(true, true))),
            Some(Kind::Exhausted)
        );
    }

    #[test]
    fn a_newer_schema_waits_the_upgrade_delay_and_is_dead_lettered_as_such_at_the_end() {
        let newer = handler(HandleError::NewerSchema("schema 3".to_owned()));
        assert_eq!(
            Fate::failed(&newer, facts(false, true)),
            Fate::RetryLater {
                delay: Duration::from_secs(30),
                why: Later::NewerSchema("reserve: schema 3".to_owned())
            }
        );
        assert_eq!(
            kind(&Fate::failed(&newer, facts(true, true))),
            Some(Kind::NewerSchema)
        );
    }

    #[test]
    fn races_are_retried_at_once_until_the_allowance_is_spent() {
        let race = handler(HandleError::Conflict("stream moved".to_owned()));
        assert_eq!(
            retry_now(&race, 0, 8),
            Some(Now::FreshState("stream moved".to_owned()))
        );
        assert_eq!(retry_now(&race, 8, 8), None);
    }

    #[test]
    fn an_unreachable_database_is_retried_in_place_however_often() {
        let gone = || Failure::Sql(sqlx::Error::PoolTimedOut);
        assert!(matches!(retry_now(&gone(), 100, 8), Some(Now::InPlace(_))));
        let through_a_handler = handler(HandleError::Transient(
            anyhow::Error::new(sqlx::Error::PoolTimedOut).context("loading"),
        ));
        assert!(matches!(
            retry_now(&through_a_handler, 0, 8),
            Some(Now::InPlace(_))
        ));
    }

    #[test]
    fn other_failures_are_not_retried_at_once() {
        let poison = handler(HandleError::Poison("bad".to_owned()));
        let transient = handler(HandleError::Transient(anyhow::anyhow!("timed out")));
        assert_eq!(retry_now(&poison, 0, 8), None);
        assert_eq!(retry_now(&transient, 0, 8), None);
        assert_eq!(
            retry_now(&Failure::Sql(sqlx::Error::RowNotFound), 0, 8),
            None
        );
    }
}
