//! The history checker (DESIGN.md, "The store is the truth"): a producer's `events` table
//! against the consumer's `inbox`, Jepsen-style. Every committed event must be recorded
//! exactly once, with the content the store holds, in stream order, and nothing the store
//! lacks may be recorded:
//!
//! - `lost`: an event of the store whose id the inbox lacks;
//! - `duplicated`: an event id recorded more than once, or a (stream, version) recorded twice
//!   (the inbox's constraints forbid both today; counted anyway, so a dropped constraint shows);
//! - `unexpected`: an inbox row whose id the store lacks, or whose stream, version, type or
//!   payload differ from the store's;
//! - `out_of_order`: within a stream, a row received (`seq`) after one of a higher version.
//!
//! [`compare`] is the pure comparison of two lists; [`check`] reads them from the databases.
//! Rows a test forged itself (published straight to NATS) are named to [`compare`] and counted
//! as `forged` instead of `unexpected`, so the checker stays strict for everything else.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Examples kept of each kind of finding.
pub const EXAMPLES: usize = 5;

/// An event as the producer's store holds it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredEvent {
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_type: String,
    pub payload: Value,
}

/// An event as the consumer's inbox recorded it, with its local receipt order.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct InboxRow {
    pub seq: i64,
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_type: String,
    pub payload: Value,
}

/// A count, and up to [`EXAMPLES`] findings in words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finding {
    pub count: usize,
    pub examples: Vec<String>,
}

impl Finding {
    fn add(&mut self, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(example());
        }
    }
}

/// What one producer -> consumer history shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Which direction, for messages (`product->order`); empty when unnamed.
    pub direction: String,
    /// Events in the producer's store.
    pub events: usize,
    /// Rows in the consumer's inbox.
    pub received: usize,
    pub lost: Finding,
    pub duplicated: Finding,
    pub unexpected: Finding,
    pub out_of_order: Finding,
    /// Inbox rows with ids the caller named as forged (not counted as unexpected).
    pub forged: usize,
}

impl History {
    /// Nothing lost, doubled, unexpected or out of order.
    pub fn is_clean(&self) -> bool {
        self.lost.count + self.duplicated.count + self.unexpected.count + self.out_of_order.count
            == 0
    }

    /// `lost=0 duplicated=0 unexpected=0 out_of_order=0`.
    pub fn summary(&self) -> String {
        format!(
            "lost={} duplicated={} unexpected={} out_of_order={}",
            self.lost.count, self.duplicated.count, self.unexpected.count, self.out_of_order.count
        )
    }

    /// Every finding with its examples, one per line.
    pub fn details(&self) -> String {
        let mut out = format!(
            "history {}: {} events, {} received, {}",
            self.direction,
            self.events,
            self.received,
            self.summary()
        );
        for (name, finding) in [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("unexpected", &self.unexpected),
            ("out_of_order", &self.out_of_order),
        ] {
            for example in &finding.examples {
                out.push_str(&format!("\n  {name}: {example}"));
            }
        }
        out
    }

    /// Panics with the details unless the history is clean.
    pub fn assert_clean(&self) {
        assert!(self.is_clean(), "{}", self.details());
    }
}

/// Compares the producer's `events` with the consumer's `inbox`; inbox rows whose ids are in
/// `forged` are counted apart and otherwise ignored.
pub fn compare(events: &[StoredEvent], inbox: &[InboxRow], forged: &HashSet<Uuid>) -> History {
    let mut history = History {
        events: events.len(),
        received: inbox.len(),
        ..History::default()
    };
    let stored: HashMap<Uuid, &StoredEvent> = events.iter().map(|e| (e.event_id, e)).collect();
    let (inbox, forged_rows): (Vec<&InboxRow>, Vec<&InboxRow>) = inbox
        .iter()
        .partition(|row| !forged.contains(&row.event_id));
    history.forged = forged_rows.len();

    let mut by_id: HashMap<Uuid, usize> = HashMap::new();
    let mut by_version: HashMap<(&str, i64), usize> = HashMap::new();
    for row in &inbox {
        *by_id.entry(row.event_id).or_default() += 1;
        *by_version
            .entry((row.stream_id.as_str(), row.stream_version))
            .or_default() += 1;
    }
    for event in events {
        if !by_id.contains_key(&event.event_id) {
            history.lost.add(|| {
                format!(
                    "{} ({} v{} {})",
                    event.event_id, event.stream_id, event.stream_version, event.event_type
                )
            });
        }
    }
    let mut ids: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    ids.sort();
    for (id, copies) in ids {
        for _ in 1..*copies {
            history
                .duplicated
                .add(|| format!("event {id} recorded {copies} times"));
        }
    }
    let mut versions: Vec<_> = by_version.iter().filter(|(_, n)| **n > 1).collect();
    versions.sort();
    for ((stream, version), copies) in versions {
        for _ in 1..*copies {
            history
                .duplicated
                .add(|| format!("{stream} v{version} recorded {copies} times"));
        }
    }
    for row in &inbox {
        match stored.get(&row.event_id) {
            None => history.unexpected.add(|| {
                format!(
                    "seq {}: {} ({} v{} {}) is not in the producer's store",
                    row.seq, row.event_id, row.stream_id, row.stream_version, row.event_type
                )
            }),
            Some(event) if !same_content(event, row) => history.unexpected.add(|| {
                format!(
                    "seq {}: {} recorded as {} v{} {} {}, stored as {} v{} {} {}",
                    row.seq,
                    row.event_id,
                    row.stream_id,
                    row.stream_version,
                    row.event_type,
                    row.payload,
                    event.stream_id,
                    event.stream_version,
                    event.event_type,
                    event.payload
                )
            }),
            Some(_) => {}
        }
    }
    // Per stream, in receipt order, each version must be above every one received before.
    let mut received: Vec<&InboxRow> = inbox.clone();
    received.sort_by_key(|row| row.seq);
    let mut highest: HashMap<&str, (i64, i64)> = HashMap::new();
    for row in received {
        match highest.get(row.stream_id.as_str()) {
            Some(&(version, seq)) if row.stream_version <= version => {
                history.out_of_order.add(|| {
                    format!(
                        "{} v{} received (seq {}) after v{version} (seq {seq})",
                        row.stream_id, row.stream_version, row.seq
                    )
                })
            }
            _ => {
                highest.insert(&row.stream_id, (row.stream_version, row.seq));
            }
        }
    }
    history
}

fn same_content(event: &StoredEvent, row: &InboxRow) -> bool {
    event.stream_id == row.stream_id
        && event.stream_version == row.stream_version
        && event.event_type == row.event_type
        && event.payload == row.payload
}

/// Reads the producer's `events` and the consumer's `inbox` and [`compare`]s them.
pub async fn check(
    producer: &PgPool,
    consumer: &PgPool,
    forged: &HashSet<Uuid>,
) -> sqlx::Result<History> {
    let events: Vec<StoredEvent> = sqlx::query_as(
        "SELECT event_id, stream_id, stream_version, event_type, payload \
         FROM events ORDER BY position",
    )
    .fetch_all(producer)
    .await?;
    let inbox: Vec<InboxRow> = sqlx::query_as(
        "SELECT seq, event_id, stream_id, stream_version, event_type, payload \
         FROM inbox ORDER BY seq",
    )
    .fetch_all(consumer)
    .await?;
    Ok(compare(&events, &inbox, forged))
}

/// [`check`] again every 250 ms until the history is clean or `within` has passed: an event
/// committed a moment ago may still be on its way (the last `OrderConfirmed` of a test, say).
pub async fn check_settled(
    producer: &PgPool,
    consumer: &PgPool,
    forged: &HashSet<Uuid>,
    within: std::time::Duration,
) -> sqlx::Result<History> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let history = check(producer, consumer, forged).await?;
        if history.is_clean() || std::time::Instant::now() >= deadline {
            return Ok(history);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(stream: &str, version: i64) -> StoredEvent {
        StoredEvent {
            event_id: Uuid::new_v4(),
            stream_id: stream.to_owned(),
            stream_version: version,
            event_type: "PriceChanged".to_owned(),
            payload: json!({ "price_cents": version * 100 }),
        }
    }

    /// The inbox rows a perfect delivery of `events` records, in order.
    fn delivered(events: &[StoredEvent]) -> Vec<InboxRow> {
        events
            .iter()
            .zip(1..)
            .map(|(e, seq)| InboxRow {
                seq,
                event_id: e.event_id,
                stream_id: e.stream_id.clone(),
                stream_version: e.stream_version,
                event_type: e.event_type.clone(),
                payload: e.payload.clone(),
            })
            .collect()
    }

    fn history() -> Vec<StoredEvent> {
        vec![event("a", 1), event("b", 1), event("a", 2), event("b", 2)]
    }

    fn none() -> HashSet<Uuid> {
        HashSet::new()
    }

    #[test]
    fn a_perfect_delivery_is_clean() {
        let events = history();
        let found = compare(&events, &delivered(&events), &none());
        found.assert_clean();
        assert_eq!((found.events, found.received), (4, 4));
        assert_eq!(
            found.summary(),
            "lost=0 duplicated=0 unexpected=0 out_of_order=0"
        );
    }

    #[test]
    fn streams_interleaved_in_another_order_than_the_producers_are_still_in_order() {
        let events = history();
        let mut inbox = delivered(&events);
        // b before a: only per-stream order counts.
        inbox.swap(0, 1);
        let (first, second) = (inbox[0].seq, inbox[1].seq);
        inbox[0].seq = second;
        inbox[1].seq = first;
        compare(&events, &inbox, &none()).assert_clean();
    }

    #[test]
    fn an_event_missing_from_the_inbox_is_lost() {
        let events = history();
        let mut inbox = delivered(&events);
        inbox.remove(2);
        let found = compare(&events, &inbox, &none());
        assert_eq!(found.lost.count, 1);
        assert!(found.lost.examples[0].contains(&events[2].event_id.to_string()));
        assert_eq!(
            found.summary(),
            "lost=1 duplicated=0 unexpected=0 out_of_order=0"
        );
    }

    #[test]
    fn an_event_recorded_twice_is_duplicated_by_id_and_by_version() {
        let events = history();
        let mut inbox = delivered(&events);
        let mut copy = inbox[1].clone();
        copy.seq = 99;
        inbox.push(copy);
        let found = compare(&events, &inbox, &none());
        // Once for the id, once for (b, 1); and the copy arrives after b v2.
        assert_eq!(found.duplicated.count, 2);
        assert_eq!(found.out_of_order.count, 1);
        assert_eq!((found.lost.count, found.unexpected.count), (0, 0));
    }

    #[test]
    fn a_second_event_at_a_recorded_version_is_duplicated_and_unexpected() {
        let events = history();
        let mut inbox = delivered(&events);
        let mut forged = inbox[0].clone();
        forged.event_id = Uuid::new_v4();
        forged.seq = 0;
        inbox.insert(0, forged);
        let found = compare(&events, &inbox, &none());
        assert_eq!(found.duplicated.count, 1);
        assert_eq!(found.unexpected.count, 1);
        assert!(found.unexpected.examples[0].contains("not in the producer's store"));
    }

    #[test]
    fn content_differing_from_the_store_is_unexpected() {
        let events = history();
        type Change = fn(&mut InboxRow);
        let cases: [(&str, Change); 4] = [
            ("stream", |r| r.stream_id = "c".to_owned()),
            ("version", |r| r.stream_version = 7),
            ("type", |r| r.event_type = "ProductRestocked".to_owned()),
            ("payload", |r| r.payload = json!({ "price_cents": 1 })),
        ];
        for (case, change) in cases {
            let mut inbox = delivered(&events);
            change(&mut inbox[3]);
            let found = compare(&events, &inbox, &none());
            assert_eq!(found.unexpected.count, 1, "{case}: {}", found.details());
            assert!(found.unexpected.examples[0].contains("stored as"), "{case}");
        }
    }

    #[test]
    fn a_stream_received_against_its_version_order_is_out_of_order() {
        let events = history();
        let mut inbox = delivered(&events);
        // a v2 (seq 3) received before a v1 (seq 1).
        inbox[0].seq = 3;
        inbox[2].seq = 1;
        let found = compare(&events, &inbox, &none());
        assert_eq!(found.out_of_order.count, 1, "{}", found.details());
        assert!(found.out_of_order.examples[0].contains("a v1 received (seq 3) after v2"));
        assert_eq!((found.lost.count, found.duplicated.count), (0, 0));
    }

    #[test]
    fn rows_named_as_forged_are_counted_apart_not_as_unexpected() {
        let events = history();
        let mut inbox = delivered(&events);
        let mut forged = inbox[0].clone();
        forged.event_id = Uuid::new_v4();
        forged.stream_id = "poison-1".to_owned();
        forged.seq = 10;
        inbox.push(forged.clone());
        let found = compare(&events, &inbox, &HashSet::from([forged.event_id]));
        found.assert_clean();
        assert_eq!(found.forged, 1);
        // Unnamed, the same row is unexpected.
        assert_eq!(compare(&events, &inbox, &none()).unexpected.count, 1);
    }

    #[test]
    fn examples_are_capped_but_counts_are_not() {
        let events: Vec<StoredEvent> = (1..=20).map(|v| event("a", v)).collect();
        let found = compare(&events, &[], &none());
        assert_eq!(found.lost.count, 20);
        assert_eq!(found.lost.examples.len(), EXAMPLES);
    }
}
