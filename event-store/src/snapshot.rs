//! Snapshots keep loading an aggregate O(1) in the length of its stream: the state folded up
//! to some version is stored beside the events, and a load reads the snapshot and the events
//! after it. A snapshot is only a cache of what the events say, so it needs no transaction of
//! its own with the append that produced its state: a newer one never gives way to an older
//! one, and one of another schema version is ignored, the events folded from the start, and
//! a new snapshot written over it.
//!
//! The aggregate's code decides what its state is and when to take a snapshot; this module
//! stores and loads them, for many streams at once.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};

use crate::preload::Preloaded;
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

impl<S> Default for Loaded<S> {
    /// A stream with neither a snapshot nor events.
    fn default() -> Self {
        Loaded {
            snapshot: None,
            events: Vec::new(),
        }
    }
}

/// Loads each stream's snapshot of `schema_version` and the events after it, in one query
/// whatever the number of streams, on the caller's connection (so a reaction sees what its
/// transaction will append to). A snapshot of another schema version, or one whose state no
/// longer decodes, is ignored (and all the stream's events are read). Streams without a
/// snapshot (any stream may be asked for) come back with all their events; streams without
/// events with neither.
pub async fn load<S: DeserializeOwned>(
    conn: &mut PgConnection,
    streams: &[&str],
    schema_version: i32,
) -> Result<HashMap<String, Loaded<S>>, sqlx::Error> {
    load_from(conn, streams, schema_version, None).await
}

/// As [`load`], taking first what the batch's one read found already ([`Preloaded`]): only
/// the streams it did not read are queried (none, when the reaction declared them all).
pub async fn load_from<S: DeserializeOwned>(
    conn: &mut PgConnection,
    streams: &[&str],
    schema_version: i32,
    preloaded: Option<&Preloaded>,
) -> Result<HashMap<String, Loaded<S>>, sqlx::Error> {
    let mut found = Found::new();
    let mut missing: Vec<(&str, i32)> = Vec::new();
    for stream in streams {
        match preloaded.and_then(|p| p.take(stream, schema_version)) {
            Some(read) => {
                found.insert((*stream).to_owned(), read);
            }
            None => missing.push((stream, schema_version)),
        }
    }
    if !missing.is_empty() {
        let sql = format!("{} ORDER BY 3, 7", fetch_sql(1));
        let rows = bind_wanted(sqlx::query(&sql), &missing)
            .fetch_all(&mut *conn)
            .await?;
        for ((stream, _), read) in gather(&rows)? {
            found.insert(stream, read);
        }
    }
    decode(conn, found, streams).await
}

/// What was found of one stream: its snapshot (version, state) if any, and the events after
/// it, in version order.
pub(crate) type FoundRead = (Option<(i64, serde_json::Value)>, Vec<RecordedEvent>);
type Found = HashMap<String, FoundRead>;
/// What was found, by stream and the snapshot schema version it was loaded at.
pub(crate) type FoundAt = HashMap<(String, i32), FoundRead>;

/// Snapshot (version, state) and the events after it, per wanted stream: one row per event
/// after the snapshot, or one row with no event when there is none after it. Its parameters,
/// numbered from `first`, are the streams and the schema version each is loaded at
/// ([`bind_wanted`]). Its first column is a constant 0, so a read of other things may
/// `UNION ALL` it (the consumer's one read, `inbox::recorded`) and tell the rows apart;
/// ordered by stream and version (`ORDER BY 1, 3, 7` of the union), [`gather`] takes them.
pub(crate) fn fetch_sql(first: usize) -> String {
    format!(
        "SELECT 0::int2 AS part, NULL::uuid AS id, w.stream, w.snapshot_schema, \
                s.stream_version AS snapshot_version, s.state AS snapshot_state, \
                e.stream_version, e.position, e.event_id, e.event_type, e.schema_version, \
                e.payload, e.metadata, e.recorded_at \
         FROM unnest(${first}::text[], ${}::int4[]) AS w(stream, snapshot_schema) \
         LEFT JOIN snapshots s \
                ON s.stream_id = w.stream AND s.schema_version = w.snapshot_schema \
         LEFT JOIN LATERAL (SELECT * FROM events \
                            WHERE stream_id = w.stream \
                              AND stream_version > coalesce(s.stream_version, 0) \
                            ORDER BY stream_version) AS e ON true",
        first + 1
    )
}

/// Binds the two array parameters of [`fetch_sql`].
pub(crate) fn bind_wanted<'q>(
    query: Query<'q, Postgres, PgArguments>,
    wanted: &[(&str, i32)],
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(
            wanted
                .iter()
                .map(|(s, _)| (*s).to_owned())
                .collect::<Vec<_>>(),
        )
        .bind(wanted.iter().map(|(_, v)| *v).collect::<Vec<_>>())
}

/// Collects rows of [`fetch_sql`], in stream and version order, into what was found per
/// stream (and the schema version it was loaded at).
pub(crate) fn gather<'r>(
    rows: impl IntoIterator<Item = &'r PgRow>,
) -> Result<FoundAt, sqlx::Error> {
    let mut found = FoundAt::new();
    for row in rows {
        let stream: String = row.try_get("stream")?;
        let schema: i32 = row.try_get("snapshot_schema")?;
        let snapshot_version: Option<i64> = row.try_get("snapshot_version")?;
        let entry = match found.entry((stream.clone(), schema)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let snapshot = match snapshot_version {
                    Some(version) => Some((version, row.try_get("snapshot_state")?)),
                    None => None,
                };
                e.insert((snapshot, Vec::new()))
            }
        };
        let position: Option<i64> = row.try_get("position")?;
        if let Some(position) = position {
            entry.1.push(RecordedEvent {
                position,
                stream_id: stream,
                stream_version: row.try_get("stream_version")?,
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                schema_version: row.try_get("schema_version")?,
                payload: row.try_get("payload")?,
                metadata: row
                    .try_get::<sqlx::types::Json<crate::Metadata>, _>("metadata")?
                    .0,
                recorded_at: row.try_get("recorded_at")?,
            });
        }
    }
    Ok(found)
}

/// Decodes what was found of `streams` (each comes back; one not found has neither a snapshot
/// nor events). A snapshot whose state no longer decodes is ignored and its stream read again,
/// whole.
async fn decode<S: DeserializeOwned>(
    conn: &mut PgConnection,
    mut found: Found,
    streams: &[&str],
) -> Result<HashMap<String, Loaded<S>>, sqlx::Error> {
    let mut unreadable = Vec::new();
    let mut loaded: HashMap<String, Loaded<S>> = HashMap::with_capacity(streams.len());
    for (stream, (snapshot, events)) in found.drain() {
        let snapshot = match snapshot {
            None => None,
            Some((version, state)) => match serde_json::from_value(state) {
                Ok(state) => Some(Snapshot { version, state }),
                Err(e) => {
                    tracing::warn!(stream, error = %e, "ignoring a snapshot that does not decode");
                    unreadable.push(stream);
                    continue;
                }
            },
        };
        loaded.insert(stream, Loaded { snapshot, events });
    }
    if !unreadable.is_empty() {
        let wanted: Vec<(&str, i64)> = unreadable.iter().map(|s| (s.as_str(), 0)).collect();
        for (stream, events) in read_streams_on(conn, &wanted).await? {
            loaded.insert(
                stream,
                Loaded {
                    snapshot: None,
                    events,
                },
            );
        }
    }
    for stream in streams {
        loaded.entry((*stream).to_owned()).or_default();
    }
    Ok(loaded)
}

/// How an insert into `snapshots` treats a stored snapshot of the same stream: replaced by one
/// of another schema version or a higher stream version, kept otherwise. Shared by [`save`]
/// and a command's statement (`store::CommandSql`).
pub(crate) const REPLACE_OLDER: &str = "ON CONFLICT (stream_id) DO UPDATE SET \
    stream_version = excluded.stream_version, schema_version = excluded.schema_version, \
    state = excluded.state, taken_at = now() \
    WHERE snapshots.schema_version <> excluded.schema_version \
       OR snapshots.stream_version < excluded.stream_version";

/// A snapshot to store: the stream, the version it reflects, the schema version of its
/// state, and the state.
#[derive(Debug, Clone)]
pub struct BatchSnapshot {
    pub stream_id: String,
    pub version: i64,
    pub schema_version: i32,
    pub state: serde_json::Value,
}

/// Stores snapshots (stream, version, state) of `schema_version` in one statement. A stored
/// snapshot of a higher version of the same schema stays.
pub async fn save<S: Serialize>(
    conn: &mut PgConnection,
    schema_version: i32,
    snapshots: &[(&str, i64, &S)],
) -> Result<(), sqlx::Error> {
    let snapshots = snapshots
        .iter()
        .map(|(stream, version, state)| {
            Ok(BatchSnapshot {
                stream_id: (*stream).to_owned(),
                version: *version,
                schema_version,
                state: serde_json::to_value(state)?,
            })
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    save_batch(conn, &snapshots).await
}

/// Stores snapshots in one statement, as [`save`] does.
pub async fn save_batch(
    conn: &mut PgConnection,
    snapshots: &[BatchSnapshot],
) -> Result<(), sqlx::Error> {
    if snapshots.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO snapshots (stream_id, stream_version, schema_version, state) \
         SELECT * FROM unnest($1::text[], $2::int8[], $3::int4[], $4::jsonb[]) \
         {REPLACE_OLDER}"
    );
    bind_batch(sqlx::query(&sql), snapshots)
        .execute(conn)
        .await?;
    Ok(())
}

/// Binds `snapshots` as four array parameters: streams, versions, schema versions, states.
pub(crate) fn bind_batch<'q>(
    query: Query<'q, Postgres, PgArguments>,
    snapshots: &'q [BatchSnapshot],
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(
            snapshots
                .iter()
                .map(|s| s.stream_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(snapshots.iter().map(|s| s.version).collect::<Vec<_>>())
        .bind(
            snapshots
                .iter()
                .map(|s| s.schema_version)
                .collect::<Vec<_>>(),
        )
        .bind(snapshots.iter().map(|s| &s.state).collect::<Vec<_>>())
}
