//! Snapshots keep loading an aggregate O(1) in the length of its stream: the state folded up
//! to some version is stored beside the events, and a load reads the snapshot and the events
//! after it. A snapshot is only a cache of what the events say, so it needs no transaction of
//! its own with the append that produced its state: a newer one never gives way to an older
//! one, and one of another schema version is ignored, the events folded from the start, and
//! a new snapshot written over it.
//!
//! The aggregate's code decides what its state is and when to take a snapshot; this module
//! stores and loads them, for many streams at once.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgConnection;

use crate::store::read_streams_on;
use crate::RecordedEvent;

/// A stream's state as of `version`, in `schema_version`'s shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot<S> {
    pub version: i64,
    pub state: S,
}

/// What a load found for one stream: the latest usable snapshot, if any, and the events after
/// it (all of them without a snapshot), in version order.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<S> {
    pub snapshot: Option<Snapshot<S>>,
    pub events: Vec<RecordedEvent>,
}

/// Loads each stream's snapshot of `schema_version` and the events after it, in two queries
/// whatever the number of streams, on the caller's connection (so a reaction sees what its
/// transaction will append to). A snapshot of another schema version, or one whose state no
/// longer decodes, is ignored. Streams without events come back with neither.
pub async fn load<S: DeserializeOwned>(
    conn: &mut PgConnection,
    streams: &[&str],
    schema_version: i32,
) -> Result<HashMap<String, Loaded<S>>, sqlx::Error> {
    let rows: Vec<(String, i64, serde_json::Value)> = sqlx::query_as(
        "SELECT stream_id, stream_version, state FROM snapshots \
         WHERE stream_id = ANY($1) AND schema_version = $2",
    )
    .bind(streams)
    .bind(schema_version)
    .fetch_all(&mut *conn)
    .await?;
    let mut snapshots: HashMap<String, Snapshot<S>> = HashMap::with_capacity(rows.len());
    for (stream, version, state) in rows {
        match serde_json::from_value(state) {
            Ok(state) => {
                snapshots.insert(stream, Snapshot { version, state });
            }
            Err(e) => {
                tracing::warn!(stream, error = %e, "ignoring a snapshot that does not decode")
            }
        }
    }
    let after: Vec<(&str, i64)> = streams
        .iter()
        .map(|s| (*s, snapshots.get(*s).map_or(0, |snap| snap.version)))
        .collect();
    let mut events = read_streams_on(conn, &after).await?;
    Ok(streams
        .iter()
        .map(|s| {
            let loaded = Loaded {
                snapshot: snapshots.remove(*s),
                events: events.remove(*s).unwrap_or_default(),
            };
            ((*s).to_owned(), loaded)
        })
        .collect())
}

/// Stores snapshots (stream, version, state) of `schema_version` in one statement. A stored
/// snapshot of a higher version of the same schema stays.
pub async fn save<S: Serialize>(
    conn: &mut PgConnection,
    schema_version: i32,
    snapshots: &[(&str, i64, &S)],
) -> Result<(), sqlx::Error> {
    if snapshots.is_empty() {
        return Ok(());
    }
    let states = snapshots
        .iter()
        .map(|(_, _, state)| serde_json::to_value(state))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO snapshots (stream_id, stream_version, schema_version, state) \
         SELECT stream_id, stream_version, $3, state \
         FROM unnest($1::text[], $2::int8[], $4::jsonb[]) AS s(stream_id, stream_version, state) \
         ON CONFLICT (stream_id) DO UPDATE SET stream_version = excluded.stream_version, \
             schema_version = excluded.schema_version, state = excluded.state, taken_at = now() \
         WHERE snapshots.schema_version <> excluded.schema_version \
            OR snapshots.stream_version < excluded.stream_version",
    )
    .bind(snapshots.iter().map(|(s, _, _)| *s).collect::<Vec<_>>())
    .bind(snapshots.iter().map(|(_, v, _)| *v).collect::<Vec<_>>())
    .bind(schema_version)
    .bind(states)
    .execute(conn)
    .await?;
    Ok(())
}
