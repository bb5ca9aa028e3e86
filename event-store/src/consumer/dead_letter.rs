//! Dead letters: a message that cannot be decoded or applied is recorded in `dead_letters`
//! with its error, published to the consumer's dead-letter subject with the error in its
//! headers, counted, and only then acknowledged. It is never silently dropped, and it never
//! blocks the messages behind it.

use async_nats::jetstream::{self, AckKind};
use async_nats::HeaderMap;
use tokio_util::sync::CancellationToken;

use super::{fate, ConsumerConfig};
use crate::retry::Backoff;
use crate::{envelope, metrics, validate, EventStore};

/// Error texts in dead-letter headers are cut to this many characters.
const MAX_ERROR_HEADER: usize = 1000;

/// Headers a dead-lettered message carries besides its original ones.
pub mod dead_letter_headers {
    /// Why the message was dead-lettered.
    pub const ERROR: &str = "Es-Dead-Letter-Error";
    /// The durable consumer that gave up on it.
    pub const CONSUMER: &str = "Es-Dead-Letter-Consumer";
    /// [`super::Kind`] as text.
    pub const KIND: &str = "Es-Dead-Letter-Kind";
}

/// Why a message was dead-lettered (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// It cannot be decoded, or a handler refused it.
    Poison,
    /// Another event is already recorded at its stream version.
    VersionConflict,
    /// Its stream's predecessor never arrived while it had deliveries left.
    OutOfOrder,
    /// A handler kept failing until its deliveries ran out.
    Exhausted,
    /// Written at a schema version newer than this service reads, still so when its
    /// deliveries ran out.
    NewerSchema,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Poison => "poison",
            Kind::VersionConflict => "version_conflict",
            Kind::OutOfOrder => "out_of_order",
            Kind::Exhausted => "exhausted",
            Kind::NewerSchema => "newer_schema",
        }
    }
}

/// Records, publishes, counts and acknowledges `message`. It is acknowledged only once it is
/// recorded; while the database is down it is kept from redelivery and retried.
pub(crate) async fn dead_letter(
    store: &EventStore,
    js: &jetstream::Context,
    config: &ConsumerConfig,
    message: &jetstream::Message,
    kind: Kind,
    error: &str,
    shutdown: &CancellationToken,
) {
    let msg = &message.message;
    let sequence = message
        .info()
        .ok()
        .and_then(|i| i64::try_from(i.stream_sequence).ok());
    tracing::error!(subject = %msg.subject, sequence, kind = kind.as_str(), error, "dead-lettering a message");
    let original = msg.headers.clone().unwrap_or_default();
    // The event it held, if it decodes: the watermark check counts it as accounted for, and
    // the same event sent again by a repair is not dead-lettered a second time.
    let event = envelope::decode(msg).ok();
    let mut backoff = Backoff::default();
    loop {
        let inserted = sqlx::query(
            "INSERT INTO dead_letters \
                 (consumer, subject, stream_sequence, headers, payload, error, kind, \
                  event_id, source_position) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
             WHERE $8::uuid IS NULL OR NOT EXISTS ( \
                 SELECT 1 FROM dead_letters WHERE event_id = $8 AND kind = $7)",
        )
        .bind(&config.durable)
        .bind(msg.subject.as_str())
        .bind(sequence)
        .bind(headers_json(&original))
        .bind(msg.payload.as_ref())
        .bind(validate::replace_nul(error))
        .bind(kind.as_str())
        .bind(event.as_ref().map(|e| e.event_id))
        .bind(event.as_ref().map(|e| e.source_position))
        .execute(store.pool())
        .await;
        match inserted {
            Ok(done) if done.rows_affected() == 0 => {
                tracing::info!("this event was dead-lettered before (sent again by a repair)");
                metrics::consumed(&config.durable, "duplicate");
                fate::ack(message).await;
                return;
            }
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a dead letter; retrying");
                let _ = message.ack_with(AckKind::Progress).await;
                backoff.wait(shutdown).await;
                if shutdown.is_cancelled() {
                    return;
                }
            }
        }
    }
    let mut headers = original;
    headers.insert(dead_letter_headers::ERROR, header_safe(error));
    headers.insert(dead_letter_headers::CONSUMER, config.durable.as_str());
    headers.insert(dead_letter_headers::KIND, kind.as_str());
    if let Err(e) = js
        .client()
        .publish_with_headers(
            config.dead_letter_subject.clone(),
            headers,
            msg.payload.clone(),
        )
        .await
    {
        tracing::warn!(error = %e, "cannot publish a dead letter (it is in dead_letters)");
    }
    metrics::dead_lettered(&config.durable, kind.as_str());
    metrics::consumed(&config.durable, "dead_lettered");
    fate::ack(message).await;
}

/// The most recent `limit` version conflicts dead-lettered (two different events claiming one
/// stream version), newest first, each as its error text, which names the stream, the version
/// and both event ids; and how many there are in all.
pub async fn version_conflicts(
    pool: &sqlx::PgPool,
    limit: i64,
) -> Result<(i64, Vec<String>), sqlx::Error> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE kind = $1")
        .bind(Kind::VersionConflict.as_str())
        .fetch_one(pool)
        .await?;
    if count == 0 {
        return Ok((0, Vec::new()));
    }
    let recent: Vec<String> = sqlx::query_scalar(
        "SELECT error FROM dead_letters WHERE kind = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(Kind::VersionConflict.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok((count, recent))
}

/// The headers as a JSON object of name -> list of values.
fn headers_json(headers: &HeaderMap) -> serde_json::Value {
    headers
        .iter()
        .map(|(name, values)| {
            let values: Vec<serde_json::Value> = values
                .iter()
                .map(|v| validate::replace_nul(v.as_str()).into())
                .collect();
            (name.to_string(), serde_json::Value::Array(values))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A header value cannot hold line breaks; long errors are cut.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_HEADER)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_lose_line_breaks_and_are_cut() {
        let long = format!("a\nb\r{}", "x".repeat(2000));
        let safe = header_safe(&long);
        assert!(safe.starts_with("a b "));
        assert_eq!(safe.chars().count(), MAX_ERROR_HEADER);
    }

    #[test]
    fn headers_become_json_without_nul() {
        let mut headers = HeaderMap::new();
        headers.insert("A", "x\0y");
        assert_eq!(
            headers_json(&headers),
            serde_json::json!({ "A": ["x\u{fffd}y"] })
        );
    }
}
