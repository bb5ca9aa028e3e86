//! What the store counts, and how far its readers are behind, for Prometheus.
//!
//! Counters (appends, consumed messages, dead letters) go through the `metrics` facade to
//! whatever recorder the process installed (none: they cost nothing). How far the relay and
//! the projectors are behind is not counted by them but measured at scrape time from the
//! database ([`lags`]: each checkpoint against the events table), so it is right whichever
//! replica leads them, and also when one is stuck and counts nothing.

use std::time::Duration;

use sqlx::PgPool;

use crate::checkpoint::{self, Lag};
use crate::projection::checkpoint_name;

/// Metric names, as rendered.
pub mod names {
    pub const EVENTS_APPENDED: &str = "es_events_appended_total";
    pub const MESSAGES_CONSUMED: &str = "es_consumer_messages_total";
    pub const DEAD_LETTERS: &str = "es_dead_letters_total";
    pub const PUBLISH_RETRIES: &str = "es_relay_publish_retries_total";
    pub const CONSUMER_REPULLS: &str = "es_consumer_repulls_total";
    pub const CONSUMER_BATCH_MESSAGES: &str = "es_consumer_batch_messages";
    pub const CONSUMER_BATCH_SECONDS: &str = "es_consumer_batch_seconds";
    pub const HEAD_POSITION: &str = "es_head_position";
    pub const RELAY_POSITION: &str = "es_relay_position";
    pub const RELAY_LAG_EVENTS: &str = "es_relay_lag_events";
    pub const RELAY_LAG_SECONDS: &str = "es_relay_lag_seconds";
    pub const PROJECTION_CHECKPOINT: &str = "es_projection_checkpoint";
    pub const PROJECTION_LAG_EVENTS: &str = "es_projection_lag_events";
    pub const PROJECTION_LAG_SECONDS: &str = "es_projection_lag_seconds";
}

/// Lag in events is counted up to this many; beyond, the reader is simply far behind.
pub const LAG_EVENTS_CAP: i64 = 100_000;

/// Describes the counters to the installed recorder (its `# HELP` lines).
pub fn describe_counters() {
    metrics::describe_counter!(
        names::EVENTS_APPENDED,
        "Events appended by this process, by stream category (the stream id up to its first '-')"
    );
    metrics::describe_counter!(
        names::MESSAGES_CONSUMED,
        "Messages of the other service handled by a consumer, by outcome: applied, duplicate, \
         retried (nak'd for redelivery), newer_schema (held: written at a schema version \
         this service does not read yet) or dead_lettered"
    );
    metrics::describe_counter!(
        names::PUBLISH_RETRIES,
        "Messages the relay sent again under the same Nats-Msg-Id because JetStream did not \
         acknowledge them (a cluster electing a leader, a node lost), by stream and reason: \
         timeout, no_responders, disconnected, refused"
    );
    metrics::describe_counter!(
        names::CONSUMER_REPULLS,
        "Times a consumer started pulling afresh because its pull went quiet (missed \
         heartbeats, no responders, a consumer leader change), by consumer and reason"
    );
    metrics::describe_histogram!(
        names::CONSUMER_BATCH_MESSAGES,
        "Messages of the other service recorded per consumer transaction"
    );
    metrics::describe_histogram!(
        names::CONSUMER_BATCH_SECONDS,
        metrics::Unit::Seconds,
        "Time a consumer took to record and settle one batch"
    );
    metrics::describe_counter!(
        names::DEAD_LETTERS,
        "Messages a consumer could not decode or apply, recorded in dead_letters, by kind: \
         poison, version_conflict (another event holds its stream version), out_of_order, \
         exhausted, newer_schema (written at a schema version this service does not read yet)"
    );
}

/// Bucket bounds of [`names::CONSUMER_BATCH_MESSAGES`], for the recorder.
pub const BATCH_MESSAGES_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Bucket bounds of [`names::CONSUMER_BATCH_SECONDS`], for the recorder.
pub const BATCH_SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// The stream category: `order-0190…` -> `order`. Stream ids are `<category>-<id>` here.
fn category(stream_id: &str) -> &str {
    stream_id.split_once('-').map_or(stream_id, |(c, _)| c)
}

pub(crate) fn appended(stream_id: &str, events: usize) {
    metrics::counter!(names::EVENTS_APPENDED, "category" => category(stream_id).to_owned())
        .increment(events as u64);
}

/// One batch of messages recorded (committed), and how long it took from its first message
/// to its last ack.
pub(crate) fn batch_recorded(consumer: &str, messages: usize, seconds: f64) {
    metrics::histogram!(names::CONSUMER_BATCH_MESSAGES, "consumer" => consumer.to_owned())
        .record(messages as f64);
    metrics::histogram!(names::CONSUMER_BATCH_SECONDS, "consumer" => consumer.to_owned())
        .record(seconds);
}

pub(crate) fn consumed(consumer: &str, outcome: &'static str) {
    metrics::counter!(
        names::MESSAGES_CONSUMED,
        "consumer" => consumer.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

/// A message sent again by the relay after `reason`: timeout, no_responders, disconnected or
/// refused.
pub(crate) fn publish_retried(stream: &str, reason: &'static str) {
    metrics::counter!(
        names::PUBLISH_RETRIES,
        "stream" => stream.to_owned(),
        "reason" => reason
    )
    .increment(1);
}

/// A consumer's pull started afresh after `reason`.
pub(crate) fn repulled(consumer: &str, reason: &'static str) {
    metrics::counter!(
        names::CONSUMER_REPULLS,
        "consumer" => consumer.to_owned(),
        "reason" => reason
    )
    .increment(1);
}

pub(crate) fn dead_lettered(consumer: &str, kind: &'static str) {
    metrics::counter!(
        names::DEAD_LETTERS,
        "consumer" => consumer.to_owned(),
        "kind" => kind
    )
    .increment(1);
}

/// What a reader of the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    /// The relay, by its checkpoint name.
    Relay(String),
    /// A projection of the store's events, by projection name.
    Projection(String),
}

impl Reader {
    pub fn checkpoint(&self) -> String {
        match self {
            Reader::Relay(checkpoint) => checkpoint.clone(),
            Reader::Projection(name) => checkpoint_name(name),
        }
    }
}

impl std::fmt::Display for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reader::Relay(_) => f.write_str("relay"),
            Reader::Projection(name) => write!(f, "projection {name}"),
        }
    }
}

/// Every reader's checkpoint and lag, lag in events counted up to `cap`.
pub async fn lags(
    pool: &PgPool,
    readers: &[Reader],
    cap: i64,
) -> Result<Vec<(Reader, Lag)>, sqlx::Error> {
    let mut all = Vec::with_capacity(readers.len());
    for reader in readers {
        all.push((
            reader.clone(),
            checkpoint::lag(pool, &reader.checkpoint(), cap).await?,
        ));
    }
    Ok(all)
}

/// The readers whose oldest unprocessed event is older than `max`.
pub async fn stuck(
    pool: &PgPool,
    readers: &[Reader],
    max: Duration,
) -> Result<Vec<(Reader, Lag)>, sqlx::Error> {
    let mut all = lags(pool, readers, 1).await?;
    all.retain(|(_, lag)| lag.seconds > max.as_secs_f64());
    Ok(all)
}

/// The store's gauges, measured from the database: the head position and each reader's
/// checkpoint and lag.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreGauges {
    pub head: i64,
    pub lags: Vec<(Reader, Lag)>,
}

impl StoreGauges {
    /// Measures them now, lag in events counted up to [`LAG_EVENTS_CAP`].
    pub async fn measure(pool: &PgPool, readers: &[Reader]) -> Result<StoreGauges, sqlx::Error> {
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
            .fetch_one(pool)
            .await?;
        Ok(StoreGauges {
            head,
            lags: lags(pool, readers, LAG_EVENTS_CAP).await?,
        })
    }

    /// Sets them on the current recorder (a scrape renders them from a recorder of its own,
    /// so replicas or tests sharing a process never mix their values).
    pub fn record(&self) {
        describe_gauges();
        metrics::gauge!(names::HEAD_POSITION).set(self.head as f64);
        for (reader, lag) in &self.lags {
            match reader {
                Reader::Relay(_) => {
                    metrics::gauge!(names::RELAY_POSITION).set(lag.position as f64);
                    metrics::gauge!(names::RELAY_LAG_EVENTS).set(lag.events as f64);
                    metrics::gauge!(names::RELAY_LAG_SECONDS).set(lag.seconds);
                }
                Reader::Projection(name) => {
                    let label = [("projection", name.clone())];
                    metrics::gauge!(names::PROJECTION_CHECKPOINT, &label).set(lag.position as f64);
                    metrics::gauge!(names::PROJECTION_LAG_EVENTS, &label).set(lag.events as f64);
                    metrics::gauge!(names::PROJECTION_LAG_SECONDS, &label).set(lag.seconds);
                }
            }
        }
    }
}

fn describe_gauges() {
    metrics::describe_gauge!(names::HEAD_POSITION, "Highest position in the events table");
    metrics::describe_gauge!(names::RELAY_POSITION, "The relay's checkpoint (a position)");
    metrics::describe_gauge!(
        names::RELAY_LAG_EVENTS,
        "Events stored beyond the relay's checkpoint (counted up to 100000)"
    );
    metrics::describe_gauge!(
        names::RELAY_LAG_SECONDS,
        "Age of the oldest event the relay has not published; 0 when caught up"
    );
    metrics::describe_gauge!(
        names::PROJECTION_CHECKPOINT,
        "A projection's checkpoint (a position)"
    );
    metrics::describe_gauge!(
        names::PROJECTION_LAG_EVENTS,
        "Events stored beyond a projection's checkpoint (counted up to 100000)"
    );
    metrics::describe_gauge!(
        names::PROJECTION_LAG_SECONDS,
        "Age of the oldest event a projection has not applied; 0 when caught up"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_category_is_the_stream_id_up_to_its_first_dash() {
        assert_eq!(category("order-0190-abc"), "order");
        assert_eq!(category("reservation-1"), "reservation");
        assert_eq!(category("plain"), "plain");
    }
}
