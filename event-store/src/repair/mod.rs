//! The store is the truth; the broker is a road that can be rebuilt.
//!
//! JetStream can lose messages it acknowledged (an unsynced crash, a corrupted block, a
//! stream recreated or purged, a lost volume). Every event is still in its producer's
//! Postgres, so every loss is repaired from there (docs/adr/0008-repair-from-the-store.md):
//!
//! - the relay checks, when it starts leading, after every publish error and every
//!   [`TICK`] while it leads, that the stream still holds the event at its checkpoint, and
//!   rewinds to the last event the stream provably holds ([`crate::relay`]);
//! - every [`TICK`] the relay leader announces a [`Watermark`] on core NATS: how many events
//!   up to which position it has published;
//! - a consumer that meets a hole (an event whose stream predecessor never arrived) or that
//!   accounts for fewer events than a watermark says, once it has nothing in flight, asks the
//!   producer ([`Request`]) to send that stream or that range again; any replica of the
//!   producer answers from its store ([`responder`]);
//! - two different events at one stream version are settled by asking the producer which
//!   one its store holds ([`Request::Which`]).
//!
//! Events sent again keep their event id (`ce-id`; the inbox takes each once) under a
//! `Nats-Msg-Id` of their own ([`crate::envelope::republished_msg_id`]).

pub(crate) mod gaps;
pub mod responder;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use gaps::Gaps;

/// How often a relay leader checks the stream's tail and announces its watermark.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// The subject `name` beside an events subject prefix, outside what the stream captures:
/// `shop.product.events` -> `shop.product.repair`.
pub fn control_subject(events_prefix: &str, name: &str) -> String {
    match events_prefix.strip_suffix(".events") {
        Some(base) => format!("{base}.{name}"),
        None => format!("{events_prefix}-{name}"),
    }
}

/// Where a producer takes repair requests (core NATS, a queue group of its replicas).
pub fn repair_subject(events_prefix: &str) -> String {
    control_subject(events_prefix, "repair")
}

/// Where a producer's relay leader announces its [`Watermark`] (core NATS).
pub fn watermark_subject(events_prefix: &str) -> String {
    control_subject(events_prefix, "watermark")
}

/// What a relay leader has published: `events` events with a position up to `position`, every
/// one acknowledged by JetStream before this was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub position: i64,
    pub events: i64,
}

/// What a consumer asks of the producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// Send `stream_id` again from `from_version` on (a hole: a later version arrived).
    Stream {
        stream_id: String,
        from_version: i64,
    },
    /// Send the events with a position in (`after`, `through`] again (a watermark short).
    Range { after: i64, through: i64 },
    /// Which event does the store hold at this stream version? (Two claim it.)
    Which { stream_id: String, version: i64 },
}

/// The producer's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Republished {
        events: usize,
    },
    /// The event at the version asked about, `None` when the store has none there.
    Holds {
        event_id: Option<Uuid>,
    },
    Refused {
        error: String,
    },
}

/// Why events were sent again (the `ce-republished` header and the metric's label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The relay found the stream lacking its tail and rewound.
    Tail,
    /// A consumer found a hole in a stream.
    Stream,
    /// A consumer accounted for fewer events than a watermark said.
    Range,
    /// An operator asked (`<service> republish`, `POST /admin/republish`).
    Operator,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Tail => "tail",
            Reason::Stream => "stream",
            Reason::Range => "range",
            Reason::Operator => "operator",
        }
    }
}

/// A number unique to one repair, for its events' message ids: microseconds since the epoch.
pub fn generation() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_micros()).unwrap_or(u64::MAX)
}

/// Metric names and updates of repairs.
pub mod metrics {
    pub const GAPS_FOUND: &str = "es_repair_gaps_found_total";
    pub const REQUESTED: &str = "es_repair_requests_total";
    pub const REPUBLISHED: &str = "es_repair_republished_events_total";
    pub const SECONDS: &str = "es_repair_seconds";
    pub const OPEN_GAPS: &str = "es_repair_open_gaps";
    /// Bucket bounds of [`SECONDS`], for the recorder.
    pub const SECONDS_BUCKETS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];

    pub fn describe() {
        metrics::describe_counter!(
            GAPS_FOUND,
            "Losses of the broker noticed, by kind: tail (the relay found its stream lacking \
             what it had published), hole (an event whose stream predecessor never arrived), \
             watermark (fewer events recorded than the producer published), broken_stream (the \
             relay's stream stored nothing while its server answered, and was replaced)"
        );
        metrics::describe_counter!(
            REQUESTED,
            "Repair requests a consumer sent to the producer, by kind: stream, range, which"
        );
        metrics::describe_counter!(
            REPUBLISHED,
            "Events this service sent again to repair the broker, by reason: tail, stream, \
             range, operator"
        );
        metrics::describe_histogram!(
            SECONDS,
            metrics::Unit::Seconds,
            "Time from a gap noticed by a consumer to the missing events recorded"
        );
        metrics::describe_gauge!(
            OPEN_GAPS,
            "Gaps a consumer noticed and has not yet repaired"
        );
    }

    pub(crate) fn gap_found(kind: &'static str) {
        metrics::counter!(GAPS_FOUND, "kind" => kind).increment(1);
    }

    pub(crate) fn requested(kind: &'static str) {
        metrics::counter!(REQUESTED, "kind" => kind).increment(1);
    }

    pub(crate) fn republished(reason: super::Reason, events: usize) {
        metrics::counter!(REPUBLISHED, "reason" => reason.as_str()).increment(events as u64);
    }

    pub(crate) fn repaired(seconds: f64) {
        metrics::histogram!(SECONDS).record(seconds);
    }

    pub(crate) fn open_gaps(open: usize) {
        metrics::gauge!(OPEN_GAPS).set(open as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_subjects_lie_beside_the_events_outside_the_stream() {
        assert_eq!(repair_subject("shop.product.events"), "shop.product.repair");
        assert_eq!(
            watermark_subject("shop.order.events"),
            "shop.order.watermark"
        );
        assert_eq!(repair_subject("t1.things"), "t1.things-repair");
    }

    #[test]
    fn requests_and_replies_read_as_they_are_written() {
        let request = Request::Stream {
            stream_id: "product-1".into(),
            from_version: 3,
        };
        let text = serde_json::to_string(&request).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"kind":"stream","stream_id":"product-1","from_version":3}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).ok(), Some(request));
        let reply = Reply::Holds { event_id: None };
        let text = serde_json::to_string(&reply).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Reply>(&text).ok(), Some(reply));
    }
}
