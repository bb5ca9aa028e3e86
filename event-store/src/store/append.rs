//! The append statements and what surrounds them: splitting an append into its streams'
//! parts, running the statement, summarising results (ids and types are checked by
//! [`crate::validate`]).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::metrics;
use crate::{AppendResult, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamAppend};

/// The first position of the current transaction: `(xid + xid_offset) << 20`, its events at
/// `+ 1, + 2, ...`. The offset is 0 until the database is moved to another cluster, whose
/// transaction ids start lower; [`crate::EventStore::continue_positions`] then raises it so
/// that positions continue above every stored one. Reading it costs one tuple of a one-row
/// table, in the append's own statement.
macro_rules! position_base {
    () => {
        "((pg_current_xact_id()::text::bigint + (SELECT xid_offset FROM position_epoch)) << 20)"
    };
}

/// [`position_base!`] as a constant: what anything that writes `events` by hand (a benchmark's
/// baseline) draws its positions with.
pub const POSITION_BASE: &str = position_base!();

/// Appends to one or more streams in one statement, drawing positions from the writing
/// transaction's id plus the database's position offset (see the migrations and
/// [`POSITION_BASE`]). The version checks and the insert are one statement:
/// unless every stream is at its expected version the statement inserts nothing, and a
/// concurrent append to the same stream loses on the unique (stream_id, stream_version)
/// constraint.
///
/// A stream's versions must also be in position order, or a reader in position order meets
/// version n+1 before n (and a projection that skips versions it has passed loses n). A
/// transaction that took its id before a stream's last event was committed would place its
/// events below that event, so such an append inserts nothing and is reported as a conflict:
/// the caller retries in a new transaction, with a newer id. Only transactions that wrote
/// something before appending (a consumer's handlers, an earlier append in the same
/// transaction) can meet this; an append that is its transaction's first write takes its id
/// after every stream's last writer committed.
///
/// Each stream's current version is read with one backward probe of the unique index, so an
/// append costs the same whatever the length of the stream's history.
pub(super) const APPEND_SQL: &str = concat!(
    r#"
WITH streams AS (
    SELECT s.stream_id, s.expected, s.idx,
           coalesce(l.stream_version, 0) AS version, coalesce(l.position, 0) AS position
    FROM unnest($1::text[], $2::int8[]) WITH ORDINALITY AS s(stream_id, expected, idx)
    LEFT JOIN LATERAL (
        SELECT e.stream_version, e.position FROM events e WHERE e.stream_id = s.stream_id
        ORDER BY e.stream_version DESC LIMIT 1
    ) AS l ON true
), base AS (
    SELECT "#,
    position_base!(),
    r#" AS position
), last_used AS (
    -- Earlier appends in the same transaction already used some ordinals.
    SELECT coalesce(max(e.position), b.position) AS position
    FROM base b LEFT JOIN events e ON e.position > b.position AND e.position < b.position + 1048576
    GROUP BY b.position
), checked AS (
    SELECT NOT EXISTS (
        SELECT 1 FROM streams, last_used
        WHERE (streams.expected IS NOT NULL AND streams.version <> streams.expected)
           OR streams.position > last_used.position
    ) AS ok
), input AS (
    SELECT t.*, row_number() OVER (PARTITION BY t.idx ORDER BY t.ord) AS n
    FROM unnest($3::int8[], $4::uuid[], $5::text[], $6::int4[], $7::jsonb[], $8::jsonb[])
         WITH ORDINALITY AS t(idx, event_id, event_type, schema_version, payload, metadata, ord)
)
INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
SELECT last_used.position + i.ord, s.stream_id, s.version + i.n,
       i.event_id, i.event_type, i.schema_version, i.payload, i.metadata
FROM input i JOIN streams s ON s.idx = i.idx, last_used, checked
WHERE checked.ok
ORDER BY i.ord
RETURNING position, stream_version, event_id, recorded_at
"#
);

/// [`APPEND_SQL`] for the common case: one stream, as its transaction's first write (an
/// `append` on its own), so no earlier ordinal of the transaction can be in use and the
/// statement needs neither the per-stream join nor the look for earlier ordinals. Same
/// checks: the expected version, and the stream's last event below this transaction's
/// positions.
pub(super) const APPEND_ONE_SQL: &str = concat!(
    r#"
WITH last AS (
    SELECT stream_version, position FROM events WHERE stream_id = $1
    ORDER BY stream_version DESC LIMIT 1
), current AS (
    SELECT coalesce((SELECT stream_version FROM last), 0) AS version,
           coalesce((SELECT position FROM last), 0) AS position,
           "#,
    position_base!(),
    r#" AS base
)
INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
SELECT current.base + t.ord, $1, current.version + t.ord,
       t.event_id, t.event_type, t.schema_version, t.payload, t.metadata
FROM current,
     unnest($3::uuid[], $4::text[], $5::int4[], $6::jsonb[], $7::jsonb[])
         WITH ORDINALITY AS t(event_id, event_type, schema_version, payload, metadata, ord)
WHERE ($2::bigint IS NULL OR current.version = $2) AND current.position < current.base
RETURNING position, stream_version, event_id, recorded_at
"#
);

/// Tries before an `Any` append that keeps losing races gives up.
pub(super) const ANY_RETRIES: usize = 32;

/// A short, growing, jittered pause between `Any` retries, so writers racing on one stream
/// stop colliding in lockstep.
pub(super) async fn retry_pause(attempt: usize) {
    let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
    crate::retry::race_pause(
        attempt,
        Duration::from_micros(200),
        Duration::from_micros(1000),
    )
    .await;
}

/// How one append statement ended, before any slow-path lookups.
pub(super) enum Attempt {
    /// One result per stream, and the events as stored, in the order given.
    Appended(Vec<AppendResult>, Vec<RecordedEvent>),
    VersionMismatch,
    UniqueViolation,
}

/// One stream's part of an append, borrowed.
pub(super) struct Part<'a> {
    pub(super) stream_id: &'a str,
    pub(super) expected: ExpectedVersion,
    pub(super) events: &'a [NewEvent],
}

pub(super) fn parts(appends: &[StreamAppend]) -> Vec<Part<'_>> {
    appends
        .iter()
        .map(|a| Part {
            stream_id: &a.stream_id,
            expected: a.expected,
            events: &a.events,
        })
        .collect()
}

/// Runs the append statement ([`APPEND_ONE_SQL`] for one stream as the transaction's
/// `first_write`). The events as stored come back only when `keep` (inline projections need
/// them); otherwise only each stream's result.
pub(super) async fn attempt(
    conn: &mut PgConnection,
    appends: &[Part<'_>],
    first_write: bool,
    keep: bool,
) -> Result<Attempt, StoreError> {
    let encode = |e: serde_json::Error| StoreError::Database(sqlx::Error::Encode(Box::new(e)));
    let events = appends
        .iter()
        .enumerate()
        .flat_map(|(i, a)| a.events.iter().map(move |e| (i, e)));
    let n: usize = appends.iter().map(|a| a.events.len()).sum();
    let (mut idx, mut ids, mut types, mut schemas, mut payloads, mut metadata) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (i, e) in events {
        idx.push(i as i64 + 1);
        ids.push(e.event_id);
        types.push(e.event_type.as_str());
        schemas.push(e.schema_version);
        payloads.push(&e.payload);
        metadata.push(serde_json::to_value(&e.metadata).map_err(encode)?);
    }
    let query = match (first_write, appends) {
        (true, [one]) => sqlx::query(APPEND_ONE_SQL)
            .bind(one.stream_id)
            .bind(one.expected.required()),
        _ => sqlx::query(APPEND_SQL)
            .bind(appends.iter().map(|a| a.stream_id).collect::<Vec<_>>())
            .bind(
                appends
                    .iter()
                    .map(|a| a.expected.required())
                    .collect::<Vec<_>>(),
            )
            .bind(idx),
    };
    let rows = query
        .bind(&ids)
        .bind(types)
        .bind(schemas)
        .bind(payloads)
        .bind(&metadata)
        .fetch_all(&mut *conn)
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Ok(Attempt::UniqueViolation)
        }
        Err(e) => return Err(e.into()),
    };
    if rows.is_empty() {
        return Ok(Attempt::VersionMismatch);
    }
    let mut stored: HashMap<Uuid, (i64, i64, DateTime<Utc>)> = HashMap::with_capacity(n);
    for row in &rows {
        stored.insert(
            row.try_get("event_id")?,
            (
                row.try_get("position")?,
                row.try_get("stream_version")?,
                row.try_get("recorded_at")?,
            ),
        );
    }
    let mut results = Vec::with_capacity(appends.len());
    let mut recorded = Vec::with_capacity(if keep { n } else { 0 });
    for a in appends {
        let mut result = AppendResult {
            stream_version: 0,
            first_position: i64::MAX,
            last_position: 0,
        };
        for e in a.events {
            let Some(&(position, version, recorded_at)) = stored.get(&e.event_id) else {
                return Err(StoreError::Database(sqlx::Error::Protocol(format!(
                    "the append returned no row for event {}",
                    e.event_id
                ))));
            };
            result.stream_version = result.stream_version.max(version);
            result.first_position = result.first_position.min(position);
            result.last_position = result.last_position.max(position);
            if !keep {
                continue;
            }
            recorded.push(RecordedEvent {
                position,
                stream_id: a.stream_id.to_owned(),
                stream_version: version,
                event_id: e.event_id,
                event_type: e.event_type.clone(),
                schema_version: e.schema_version,
                payload: e.payload.clone(),
                metadata: e.metadata.clone(),
                recorded_at,
            });
        }
        results.push(result);
    }
    Ok(Attempt::Appended(results, recorded))
}

pub(super) fn count_appended(appends: &[StreamAppend]) {
    for a in appends {
        metrics::appended(&a.stream_id, a.events.len());
    }
}

pub(super) fn summarise(rows: &[RecordedEvent]) -> AppendResult {
    AppendResult {
        stream_version: rows.iter().map(|r| r.stream_version).max().unwrap_or(0),
        first_position: rows.iter().map(|r| r.position).min().unwrap_or(0),
        last_position: rows.iter().map(|r| r.position).max().unwrap_or(0),
    }
}

pub(super) fn retry_any(appends: &[StreamAppend]) -> bool {
    appends.iter().all(|a| a.expected == ExpectedVersion::Any)
}

pub(super) fn conflict(stream_id: &str, expected: ExpectedVersion, actual: i64) -> StoreError {
    StoreError::Conflict {
        stream_id: stream_id.to_owned(),
        expected,
        actual,
    }
}
