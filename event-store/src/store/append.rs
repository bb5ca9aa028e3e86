//! The append statements and what surrounds them: splitting an append into its streams'
//! parts, running the statement, summarising results (ids and types are checked by
//! [`crate::validate`]).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};
use uuid::Uuid;

use crate::envelope::ForeignEvent;
use crate::idempotency::{Claimed, Kept};
use crate::metrics;
use crate::read_model::RowUpsert;
use crate::snapshot::BatchSnapshot;
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

/// The common table expressions of [`APPEND_SQL`]: each stream's version and last position,
/// the position base, the last ordinal an earlier append of the transaction used, the
/// checks, and the events by stream. Parameters: `$1` the streams, `$2` their expected
/// versions (NULL: any), `$3` each event's stream (1-based index into `$1`), `$4`..`$8` the
/// events' ids, types, schema versions, payloads and metadata.
macro_rules! append_many_ctes {
    () => {
        concat!(
            r#"streams AS (
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
)"#
        )
    };
}

/// The insert of [`APPEND_SQL`], which inserts nothing unless the checks hold.
macro_rules! append_many_insert {
    () => {
        r#"INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
SELECT last_used.position + i.ord, s.stream_id, s.version + i.n,
       i.event_id, i.event_type, i.schema_version, i.payload, i.metadata
FROM input i JOIN streams s ON s.idx = i.idx, last_used, checked
WHERE checked.ok
ORDER BY i.ord
RETURNING position, stream_version, event_id, recorded_at"#
    };
}

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
pub(super) const APPEND_SQL: &str =
    concat!("WITH ", append_many_ctes!(), "\n", append_many_insert!());

/// The common table expressions: the stream's last event, and the version,
/// position and position base the append checks and draws from. Parameters: `$1` the
/// stream, `$2` the expected version (NULL: any).
macro_rules! append_one_ctes {
    () => {
        concat!(
            r#"last AS (
    SELECT stream_version, position FROM events WHERE stream_id = $1
    ORDER BY stream_version DESC LIMIT 1
), current AS (
    SELECT coalesce((SELECT stream_version FROM last), 0) AS version,
           coalesce((SELECT position FROM last), 0) AS position,
           "#,
            position_base!(),
            r#" AS base
)"#
        )
    };
}

/// The insert of [`APPEND_ONE_SQL`], which inserts nothing unless the checks hold. Parameters:
/// `$3`..`$7` the events' ids, types, schema versions, payloads and metadata.
macro_rules! append_one_insert {
    () => {
        r#"INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
SELECT current.base + t.ord, $1, current.version + t.ord,
       t.event_id, t.event_type, t.schema_version, t.payload, t.metadata
FROM current,
     unnest($3::uuid[], $4::text[], $5::int4[], $6::jsonb[], $7::jsonb[])
         WITH ORDINALITY AS t(event_id, event_type, schema_version, payload, metadata, ord)
WHERE ($2::bigint IS NULL OR current.version = $2) AND current.position < current.base
RETURNING position, stream_version, event_id, recorded_at"#
    };
}

/// [`APPEND_SQL`] for the common case: one stream, as its transaction's first write (an
/// `append` on its own), so no earlier ordinal of the transaction can be in use and the
/// statement needs neither the per-stream join nor the look for earlier ordinals. Same
/// checks: the expected version, and the stream's last event below this transaction's
/// positions.
pub(super) const APPEND_ONE_SQL: &str =
    concat!("WITH ", append_one_ctes!(), "\n", append_one_insert!());

/// The parameter of [`CommandSql`] that holds the first read model row; the rows follow.
const FIRST_ROW_PARAM: usize = 15;

/// Everything a command writes, as one statement in its own transaction (autocommit): the
/// append of [`APPEND_ONE_SQL`], then, each guarded on the append having inserted its events
/// (`EXISTS (SELECT 1 FROM appended)`), the response kept for the request's idempotency key,
/// the aggregate's snapshot when one is due, and the row of each inline read model, computed
/// by the command from the state it decided on ([`crate::read_model::StateRow`]). An append
/// that fails its checks inserts nothing, and so writes nothing else; one that loses a race
/// on the stream's unique version fails as a whole. No part writes anything blindly: the
/// kept response only fills a key this request's generation claimed and nobody kept yet,
/// the snapshot and the rows only replace older versions.
///
/// Parameters: `$1`..`$7` as [`APPEND_ONE_SQL`]; `$8` the idempotency key (NULL: none), `$9`
/// its generation, `$10`..`$12` the response's status, location and body; `$13` the
/// snapshot's schema version, `$14` its state (NULL: no snapshot); from `$15` on, one JSON
/// row per read model, in the order the upserts were given.
#[derive(Debug, Clone)]
pub struct CommandSql {
    sql: String,
    rows: usize,
}

impl CommandSql {
    /// The statement for a store whose inline read models write with these upserts, each
    /// reading its one row from a relation it names `{input}` (a column `data jsonb`).
    pub fn new(upserts: &[&str]) -> Self {
        let mut sql = format!(
            r#"WITH {},
appended AS (
{}
), kept AS (
    UPDATE idempotency_keys
    SET status = $10, location = $11, body = $12, locked_until = now()
    WHERE key = $8 AND generation = $9 AND status IS NULL
      AND EXISTS (SELECT 1 FROM appended)
), snapshot AS (
    INSERT INTO snapshots (stream_id, stream_version, schema_version, state)
    SELECT $1, (SELECT max(stream_version) FROM appended), $13, $14
    WHERE $14::jsonb IS NOT NULL AND EXISTS (SELECT 1 FROM appended)
    {}
)"#,
            append_one_ctes!(),
            append_one_insert!(),
            crate::snapshot::REPLACE_OLDER
        );
        sql.push_str(&more(row_ctes(
            upserts,
            FIRST_ROW_PARAM,
            "SELECT ${}::jsonb AS data",
            IF_APPENDED,
        )));
        sql.push_str(APPENDED);
        CommandSql {
            sql,
            rows: upserts.len(),
        }
    }
}

/// What a batch statement's upserts read their rows from: the `jsonb[]` parameter whose
/// number goes in the `{}`, one row per element.
pub(crate) const ROWS_INPUT: &str = "SELECT data FROM unnest(${}::jsonb[]) AS t(data)";

/// One `input_i`/`row_i` pair of common table expressions per upsert, joined by commas: the
/// rows (from parameter `first_param + i`, read by `input`, a `SELECT` with a `{}` for the
/// parameter's number, restricted by `condition`: empty, or a `WHERE` clause), and the upsert
/// reading them as `{input}`.
pub(crate) fn row_ctes(
    upserts: &[&str],
    first_param: usize,
    input: &str,
    condition: &str,
) -> String {
    let mut ctes = Vec::with_capacity(upserts.len());
    for (i, upsert) in upserts.iter().enumerate() {
        let name = format!("input_{i}");
        let select = input.replace("{}", &(first_param + i).to_string());
        ctes.push(format!(
            "{name} AS ({select} {condition}),\nrow_{i} AS (\n{}\n)",
            upsert.replace("{input}", &name)
        ));
    }
    ctes.join(",\n")
}

/// The rows of an upsert, present only when `appended` has rows.
const IF_APPENDED: &str = "WHERE EXISTS (SELECT 1 FROM appended)";

/// The answer of the append statements: the events appended.
const APPENDED: &str = "\nSELECT position, stream_version, event_id, recorded_at FROM appended";

/// `ctes` after a comma, if there are any.
fn more(ctes: String) -> String {
    if ctes.is_empty() {
        ctes
    } else {
        format!(",\n{ctes}")
    }
}

/// The parameter of [`BatchSql`] that holds the first of the inbox rows' eight arrays.
const INBOX_PARAM: usize = 13;
/// The parameter of [`BatchSql`] that holds the first read model's rows.
const FIRST_ROWS_PARAM: usize = INBOX_PARAM + 8;

/// Everything a reaction's batch writes, as one statement on the consumer's transaction: the
/// multi-stream append of [`APPEND_SQL`], then, each guarded on the append having inserted
/// its events, the snapshots of the aggregates it took further, the inbox rows of the
/// batch's events (when the consumer's [`crate::consumer::Recording`] offered them), the
/// rows of each inline read model, computed from the states the batch decided on, and the
/// rows other projections of the batch left with the recording
/// ([`crate::consumer::Recording::defer`]) for the upserts it was built with. As with
/// [`CommandSql`], an append that fails its checks writes nothing, one that loses a race
/// fails as a whole (and with it the batch's transaction), and snapshots and rows only
/// replace older versions.
///
/// Parameters: `$1`..`$8` as [`APPEND_SQL`]; `$9`..`$12` the snapshots' streams, versions,
/// schema versions and states; `$13`..`$20` the inbox rows (empty: none); from `$21` on, one
/// JSON array of rows per read model, in the order the upserts were given, then one per
/// deferred upsert.
#[derive(Debug, Clone)]
pub struct BatchSql {
    sql: String,
    names: Vec<&'static str>,
    deferred: Vec<RowUpsert>,
}

impl BatchSql {
    /// The statement for these inline read models, each as its name and an upsert reading
    /// its rows from a relation it names `{input}` (a column `data jsonb`), as
    /// [`CommandSql::new`]'s, and for the rows of the `deferred` upserts.
    pub fn new(models: &[(&'static str, &str)], deferred: &[RowUpsert]) -> Self {
        let upserts: Vec<&str> = models
            .iter()
            .map(|(_, upsert)| *upsert)
            .chain(deferred.iter().map(|u| u.sql))
            .collect();
        let mut sql = format!(
            r#"WITH {},
appended AS (
{}
), snapshot AS (
    INSERT INTO snapshots (stream_id, stream_version, schema_version, state)
    SELECT * FROM unnest($9::text[], $10::int8[], $11::int4[], $12::jsonb[])
    {IF_APPENDED}
    {}
), recorded AS (
    {}
)"#,
            append_many_ctes!(),
            append_many_insert!(),
            crate::snapshot::REPLACE_OLDER,
            crate::inbox::insert_sql(INBOX_PARAM, IF_APPENDED)
        );
        sql.push_str(&more(row_ctes(
            &upserts,
            FIRST_ROWS_PARAM,
            ROWS_INPUT,
            IF_APPENDED,
        )));
        sql.push_str(APPENDED);
        BatchSql {
            sql,
            names: models.iter().map(|(name, _)| *name).collect(),
            deferred: deferred.to_vec(),
        }
    }

    /// The read models it writes rows of, by name, in the order of their upserts.
    pub fn models(&self) -> &[&'static str] {
        &self.names
    }

    /// The upserts of deferred rows it writes, in their order.
    pub fn deferred(&self) -> &[RowUpsert] {
        &self.deferred
    }
}

/// Runs a reaction batch's statement ([`BatchSql`]) on the caller's transaction: the append
/// and the snapshots, inbox rows and read model rows beside it (`rows`: one list per read
/// model of `sql`; `deferred`: one per deferred upsert), all or nothing.
pub(super) async fn attempt_batch(
    conn: &mut PgConnection,
    appends: &[Part<'_>],
    sql: &BatchSql,
    snapshots: &[BatchSnapshot],
    inbox: &[&ForeignEvent],
    rows: &[Vec<serde_json::Value>],
    deferred: &[Vec<serde_json::Value>],
) -> Result<Attempt, StoreError> {
    if rows.len() != sql.names.len() || deferred.len() != sql.deferred.len() {
        return Err(StoreError::Database(sqlx::Error::InvalidArgument(format!(
            "the batch statement writes {} read models' rows and {} deferred, {} and {} given",
            sql.names.len(),
            sql.deferred.len(),
            rows.len(),
            deferred.len()
        ))));
    }
    let columns = Columns::of(appends)?;
    let query = columns.bind_streams(sqlx::query(&sql.sql), appends);
    let query = crate::snapshot::bind_batch(query, snapshots);
    let mut query = crate::inbox::bind_rows(query, inbox)?;
    for model in rows.iter().chain(deferred) {
        query = query.bind(model);
    }
    let rows = query.fetch_all(&mut *conn).await;
    outcome(rows, appends, Returning::Results)
}

/// What a command writes beside its events in [`CommandSql`]'s statement.
#[derive(Debug, Default)]
pub struct Beside<'a> {
    /// The response kept for the request's idempotency key.
    pub kept: Option<(&'a Claimed, &'a Kept)>,
    /// The aggregate's snapshot when one is due: its schema version and state.
    pub snapshot: Option<(i32, serde_json::Value)>,
    /// One row per inline read model, in the order of the statement's upserts.
    pub rows: &'a [serde_json::Value],
}

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

/// The events of an append as the statements' array parameters.
struct Columns<'a> {
    idx: Vec<i64>,
    ids: Vec<Uuid>,
    types: Vec<&'a str>,
    schemas: Vec<i32>,
    payloads: Vec<&'a serde_json::Value>,
    metadata: Vec<serde_json::Value>,
}

impl<'a> Columns<'a> {
    fn of(appends: &[Part<'a>]) -> Result<Self, StoreError> {
        let n: usize = appends.iter().map(|a| a.events.len()).sum();
        let mut columns = Columns {
            idx: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            schemas: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        };
        for (i, a) in appends.iter().enumerate() {
            for e in a.events {
                columns.idx.push(i as i64 + 1);
                columns.ids.push(e.event_id);
                columns.types.push(e.event_type.as_str());
                columns.schemas.push(e.schema_version);
                columns.payloads.push(&e.payload);
                columns
                    .metadata
                    .push(serde_json::to_value(&e.metadata).map_err(StoreError::encode)?);
            }
        }
        Ok(columns)
    }

    /// Binds the events' ids, types, schema versions, payloads and metadata (`$3`..`$7` of
    /// [`APPEND_ONE_SQL`]).
    fn bind_events<'q>(
        &'q self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(&self.ids)
            .bind(&self.types)
            .bind(&self.schemas)
            .bind(&self.payloads)
            .bind(&self.metadata)
    }

    /// Binds `$1`..`$8` of [`APPEND_SQL`]: the streams, their expected versions, each
    /// event's stream, then the events.
    fn bind_streams<'q>(
        &'q self,
        query: Query<'q, Postgres, PgArguments>,
        appends: &'q [Part<'_>],
    ) -> Query<'q, Postgres, PgArguments> {
        self.bind_events(
            query
                .bind(appends.iter().map(|a| a.stream_id).collect::<Vec<_>>())
                .bind(
                    appends
                        .iter()
                        .map(|a| a.expected.required())
                        .collect::<Vec<_>>(),
                )
                .bind(&self.idx),
        )
    }
}

/// Where an append stands in its transaction, which decides the statement it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InTransaction {
    /// The transaction's first write (an append on its own): one stream runs
    /// [`APPEND_ONE_SQL`], which needs no look for earlier ordinals.
    FirstWrite,
    /// After other writes of the caller's transaction: [`APPEND_SQL`], with its position check.
    AfterOtherWrites,
}

/// What an append hands back besides each stream's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Returning {
    /// Only each stream's result.
    Results,
    /// The events as stored too, for the inline projections to apply.
    StoredEvents,
}

/// Runs the append statement for the appends, as [`InTransaction`] says.
pub(super) async fn attempt(
    conn: &mut PgConnection,
    appends: &[Part<'_>],
    place: InTransaction,
    returning: Returning,
) -> Result<Attempt, StoreError> {
    let columns = Columns::of(appends)?;
    let query = match (place, appends) {
        (InTransaction::FirstWrite, [one]) => columns.bind_events(
            sqlx::query(APPEND_ONE_SQL)
                .bind(one.stream_id)
                .bind(one.expected.required()),
        ),
        _ => columns.bind_streams(sqlx::query(APPEND_SQL), appends),
    };
    let rows = query.fetch_all(&mut *conn).await;
    outcome(rows, appends, returning)
}

/// Runs a command's statement ([`CommandSql`]) for one stream, in autocommit: the append and
/// what is written `beside` it, all or nothing.
pub(super) async fn attempt_command(
    conn: &mut PgConnection,
    append: &Part<'_>,
    sql: &CommandSql,
    beside: &Beside<'_>,
) -> Result<Attempt, StoreError> {
    if beside.rows.len() != sql.rows {
        // A caller's bug, not the database's: not one of the errors retried as unavailable.
        return Err(StoreError::Database(sqlx::Error::InvalidArgument(format!(
            "the command statement writes {} read model rows, {} given",
            sql.rows,
            beside.rows.len()
        ))));
    }
    let appends = std::slice::from_ref(append);
    let columns = Columns::of(appends)?;
    let (claimed, kept) = beside.kept.unzip();
    let (schema_version, state) = beside.snapshot.clone().unzip();
    let mut query = columns
        .bind_events(
            sqlx::query(&sql.sql)
                .bind(append.stream_id)
                .bind(append.expected.required()),
        )
        .bind(claimed.map(|c| c.key.as_str()))
        .bind(claimed.map(|c| c.generation))
        .bind(kept.map(|k| i16::try_from(k.status).unwrap_or(500)))
        .bind(kept.and_then(|k| k.location.as_deref()))
        .bind(kept.map(|k| k.body.as_slice()))
        .bind(schema_version)
        .bind(state);
    for row in beside.rows {
        query = query.bind(row);
    }
    let rows = query.fetch_all(&mut *conn).await;
    outcome(rows, appends, Returning::Results)
}

/// What an append statement's answer says: the events stored, none (a check failed), or a
/// lost race on a unique index.
fn outcome(
    rows: Result<Vec<sqlx::postgres::PgRow>, sqlx::Error>,
    appends: &[Part<'_>],
    returning: Returning,
) -> Result<Attempt, StoreError> {
    let keep = returning == Returning::StoredEvents;
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
    let n: usize = appends.iter().map(|a| a.events.len()).sum();
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
