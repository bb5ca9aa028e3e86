//! Loading aggregates: read a stream, fold its events, remember the version for the next append.

use anyhow::Context as _;
use event_store::{ExpectedVersion, RecordedEvent};
use sqlx::PgConnection;

use crate::domain::events::{ProductEvent, ReservationEvent};
use crate::domain::product::{self, ProductState};
use crate::domain::reservation::{self, ReservationState};

/// An aggregate's state and the version of the last event folded into it (0: no stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<S> {
    pub state: S,
    pub version: i64,
}

impl<S> Loaded<S> {
    /// What the next append must expect so that any concurrent write makes it conflict.
    pub fn expected(&self) -> ExpectedVersion {
        if self.version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(self.version)
        }
    }
}

pub fn fold_product(events: &[RecordedEvent]) -> anyhow::Result<Loaded<ProductState>> {
    fold(events, ProductEvent::from_stored, product::evolve)
}

pub fn fold_reservation(events: &[RecordedEvent]) -> anyhow::Result<Loaded<ReservationState>> {
    fold(events, ReservationEvent::from_stored, reservation::evolve)
}

/// Folds stored events; types this code does not know are skipped (they still count for the
/// version), a known type that does not decode is an error.
fn fold<S: Default, E>(
    events: &[RecordedEvent],
    decode: fn(&str, &serde_json::Value) -> Result<Option<E>, serde_json::Error>,
    evolve: fn(S, &E) -> S,
) -> anyhow::Result<Loaded<S>> {
    let mut state = S::default();
    let mut version = 0;
    for stored in events {
        let decoded = decode(&stored.event_type, &stored.payload).with_context(|| {
            format!(
                "decoding {} at version {} of {}",
                stored.event_type, stored.stream_version, stored.stream_id
            )
        })?;
        if let Some(event) = decoded {
            state = evolve(state, &event);
        }
        version = stored.stream_version;
    }
    Ok(Loaded { state, version })
}

/// Reads a whole stream on `conn`, so a reaction sees the state as of its own transaction.
/// (`EventStore::read_stream` reads through the pool, outside any transaction.)
pub async fn read_stream_on(
    conn: &mut PgConnection,
    stream_id: &str,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, stream_id, stream_version, event_id, event_type, schema_version, \
                payload, metadata, recorded_at \
         FROM events WHERE stream_id = $1 ORDER BY stream_version",
    )
    .bind(stream_id)
    .fetch_all(conn)
    .await
}
