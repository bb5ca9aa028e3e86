//! The inbox: every event received from the other service, recorded in the same transaction
//! as its effect. Its unique event id recognises a redelivery forever (JetStream only
//! de-duplicates inside its window), its (stream, version) pairs give per-stream order, and its
//! `seq` is the local receipt order in which a rebuild replays projections of foreign events.
//!
//! Everything here works on a batch at once (one statement per question, whatever the batch's
//! size), on the caller's transaction: the consumer records a batch of messages, and replay
//! reads ranges of rows.
//!
//! Its locks (the inbox lock and one per stream) are in [`crate::locks`].

use std::collections::{HashMap, HashSet};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, PgExecutor, Postgres, Row};
use uuid::Uuid;

use crate::envelope::ForeignEvent;
use crate::locks;
use crate::preload::{self, Preloaded, Reads};
use crate::read_model::RowUpsert;
use crate::snapshot;
use crate::Metadata;

/// The statement that begins a recording transaction and takes its locks, in one round trip:
/// the inbox lock shared, before any write (the inbox rows drawn later, and whatever the
/// handlers write), then one lock per stream, so consumers (replicas) working on the same
/// stream serialise ([`locks::inbox_recording_sql`]).
pub(crate) fn begin_and_lock(streams: &[&str]) -> String {
    format!("BEGIN; {}", locks::inbox_recording_sql(streams))
}

/// What the inbox holds of a batch, and what its reactions declared they will read
/// ([`Reads`]), in one query: which of `ids` are recorded, the highest version recorded of
/// each of `streams` (absent: none recorded), each declared stream's snapshot and the events
/// after it, and the declared read-model rows.
pub(crate) async fn recorded(
    conn: &mut PgConnection,
    ids: &[Uuid],
    streams: &[&str],
    reads: &Reads,
) -> Result<Recorded, sqlx::Error> {
    // Parts told apart by the first column, in the columns (and names) of the streams' read
    // (`snapshot::fetch_sql`): the declared streams (0), sorted by stream and version as
    // `snapshot::gather` takes them; the recorded ids (1), one index probe per id; the
    // streams' versions (2), one probe per stream of the unique (stream_id, stream_version)
    // index, backwards, however long its history; the declared rows of each table (3), the
    // table's place among them in the fourth column and the row as JSON in the sixth.
    let tables = reads.tables();
    let mut sql = format!(
        "{} \
         UNION ALL \
         SELECT 1::int2, event_id, NULL::text, NULL::int4, NULL::int8, NULL::jsonb, NULL::int8, \
                {NO_EVENT} FROM inbox WHERE event_id = ANY($1) \
         UNION ALL \
         SELECT 2::int2, NULL::uuid, s.stream_id, NULL::int4, NULL::int8, NULL::jsonb, \
                v.stream_version, {NO_EVENT} \
         FROM unnest($2::text[]) AS s(stream_id) \
         CROSS JOIN LATERAL (SELECT stream_version FROM inbox i WHERE i.stream_id = s.stream_id \
                             ORDER BY stream_version DESC LIMIT 1) AS v",
        snapshot::fetch_sql(3)
    );
    for (i, (table, key, _)) in tables.iter().enumerate() {
        let (table, key) = (quoted(table), quoted(key));
        sql.push_str(&format!(
            " UNION ALL \
             SELECT 3::int2, t.{key}, NULL::text, {i}::int4, NULL::int8, to_jsonb(t), \
                    NULL::int8, {NO_EVENT} FROM {table} t WHERE t.{key} = ANY(${}::uuid[])",
            5 + i
        ));
    }
    sql.push_str(" ORDER BY 1, 3, 7");
    let mut query =
        snapshot::bind_wanted(sqlx::query(&sql).bind(ids).bind(streams), &reads.streams());
    for (_, _, keys) in &tables {
        query = query.bind(keys);
    }
    let rows = query.fetch_all(conn).await?;
    let mut recorded = Recorded::default();
    let mut declared = Vec::new();
    let mut found: HashMap<&'static str, preload::Rows> = tables
        .iter()
        .map(|(table, _, keys)| {
            let rows = preload::Rows {
                declared: keys.iter().copied().collect(),
                found: HashMap::new(),
            };
            (*table, rows)
        })
        .collect();
    for row in &rows {
        match row.try_get::<i16, _>(0)? {
            0 => declared.push(row),
            1 => {
                recorded.known.insert(row.try_get(1)?);
            }
            2 => {
                recorded.versions.insert(row.try_get(2)?, row.try_get(6)?);
            }
            _ => {
                let place = usize::try_from(row.try_get::<i32, _>(3)?).ok();
                let table = place
                    .and_then(|i| tables.get(i))
                    .map(|(table, _, _)| *table);
                if let Some(rows) = table.and_then(|table| found.get_mut(table)) {
                    rows.found.insert(row.try_get(1)?, row.try_get(5)?);
                }
            }
        }
    }
    recorded.preloaded = Preloaded::new(snapshot::gather(declared)?, found);
    Ok(recorded)
}

/// `name` as a quoted SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The columns of the streams' read that the inbox's parts of [`recorded`] leave empty.
const NO_EVENT: &str = "NULL::int8, NULL::uuid, NULL::text, NULL::int4, NULL::jsonb, \
                        NULL::jsonb, NULL::timestamptz";

/// What [`recorded`] found.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    /// The batch's ids the inbox holds.
    pub known: HashSet<Uuid>,
    /// The highest version recorded of each stream of the batch that has one.
    pub versions: HashMap<String, i64>,
    /// What the reactions declared, read.
    pub preloaded: Preloaded,
}

/// The event recorded at `version` of `stream`, if any.
pub(crate) async fn recorded_at_version(
    conn: &mut PgConnection,
    stream: &str,
    version: i64,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT event_id FROM inbox WHERE stream_id = $1 AND stream_version = $2")
        .bind(stream)
        .bind(version)
        .fetch_optional(conn)
        .await
}

/// Records `events` in one statement, drawing their `seq` in the order given.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    events: &[&ForeignEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    bind_rows(sqlx::query(&insert_sql(1, "")), events)?
        .execute(conn)
        .await?;
    Ok(())
}

/// The insert of a batch's inbox rows, its parameters numbered from `first` (eight arrays,
/// bound by [`bind_rows`]) and its `SELECT` restricted by `condition` (empty: none; else a
/// `WHERE` clause), drawing `seq` in the order given.
pub(crate) fn insert_sql(first: usize, condition: &str) -> String {
    let p: Vec<String> = (first..first + 8).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO inbox (event_id, stream_id, stream_version, event_type, schema_version, \
                            payload, metadata, source_position) \
         SELECT event_id, stream_id, stream_version, event_type, schema_version, payload, \
                metadata, source_position \
         FROM unnest({}::uuid[], {}::text[], {}::int8[], {}::text[], {}::int4[], {}::jsonb[], \
                     {}::jsonb[], {}::int8[]) WITH ORDINALITY \
              AS t(event_id, stream_id, stream_version, event_type, schema_version, payload, \
                   metadata, source_position, ord) \
         {condition} ORDER BY ord",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
    )
}

/// Binds `events` as the eight array parameters of [`insert_sql`].
pub(crate) fn bind_rows<'q>(
    query: Query<'q, Postgres, PgArguments>,
    events: &'q [&'q ForeignEvent],
) -> Result<Query<'q, Postgres, PgArguments>, sqlx::Error> {
    let metadata = events
        .iter()
        .map(|e| serde_json::to_value(&e.metadata))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    Ok(query
        .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.stream_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.stream_version).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.schema_version).collect::<Vec<_>>())
        .bind(events.iter().map(|e| &e.payload).collect::<Vec<_>>())
        .bind(metadata)
        .bind(events.iter().map(|e| e.source_position).collect::<Vec<_>>()))
}

/// The inbox rows of a batch's applied events, offered to its reactions
/// ([`crate::consumer::Reaction::handle_recording`]): one that writes its effect in one
/// statement may record them in that statement ([`crate::store::BatchSql`]) and save the
/// consumer a round trip. Taken at most once; the consumer inserts them itself otherwise.
///
/// A projection of foreign events may leave its rows with it ([`Recording::defer`]): the
/// statement that takes the inbox rows writes them too when it was built with their upsert
/// ([`crate::store::BatchSql`]), and the consumer writes what is left with the inbox rows it
/// writes itself, in one statement ([`write_left`]).
///
/// It also carries back whether a reaction appended events in the batch's transaction, so
/// the consumer wakes the relay after the commit only then:
/// [`crate::aggregate::BatchAppend::write`] says so itself; a reaction that appends another
/// way calls [`Recording::appended`] (or its events wait for the relay's next poll).
pub struct Recording<'a> {
    events: &'a [&'a ForeignEvent],
    taken: AtomicBool,
    appended: AtomicBool,
    preloaded: Preloaded,
    deferred: Mutex<Vec<(RowUpsert, Vec<serde_json::Value>)>>,
}

impl<'a> Recording<'a> {
    pub(crate) fn new(events: &'a [&'a ForeignEvent], preloaded: Preloaded) -> Self {
        Recording {
            events,
            taken: AtomicBool::new(false),
            appended: AtomicBool::new(false),
            preloaded,
            deferred: Mutex::new(Vec::new()),
        }
    }

    /// The streams and rows the reactions declared ([`crate::consumer::Reaction::reads`]),
    /// read in the batch's one read: a load through [`crate::snapshot::load_from`] (or
    /// [`crate::aggregate::load_many_from`], [`Preloaded::rows`]) takes them from here
    /// instead of querying.
    pub fn preloaded(&self) -> &Preloaded {
        &self.preloaded
    }

    /// Says that a reaction appended events in the batch's transaction.
    pub fn appended(&self) {
        self.appended.store(true, Ordering::Release);
    }

    /// Whether a reaction said it appended.
    pub(crate) fn has_appended(&self) -> bool {
        self.appended.load(Ordering::Acquire)
    }

    /// The rows, unless taken already: the taker must write them in the statement it runs
    /// next, or fail the batch. The consumer takes what no reaction took.
    pub(crate) fn take(&self) -> Option<&'a [&'a ForeignEvent]> {
        (!self.taken.swap(true, Ordering::AcqRel)).then_some(self.events)
    }

    /// Leaves read-model rows to be written by the batch's next statement that has their
    /// `upsert` (a reaction's [`crate::store::BatchSql`]), or else by the consumer with the
    /// inbox rows, either way in the batch's transaction before it commits: a round trip
    /// saved. The caller must not read them back in the transaction. A projection that
    /// leaves rows runs before the reaction whose statement should take them (the consumer's
    /// handlers run in the order given).
    pub fn defer(&self, upsert: RowUpsert, rows: Vec<serde_json::Value>) {
        if !rows.is_empty() {
            self.deferred_rows().push((upsert, rows));
        }
    }

    /// The rows left for each of `upserts`, in their order (empty: none), taken: the taker
    /// must write them in the statement it runs next, or fail the batch.
    pub(crate) fn take_deferred(&self, upserts: &[RowUpsert]) -> Vec<Vec<serde_json::Value>> {
        let mut deferred = self.deferred_rows();
        let mut taken = vec![Vec::new(); upserts.len()];
        deferred.retain_mut(
            |(upsert, rows)| match upserts.iter().position(|u| u == upsert) {
                Some(i) => {
                    taken[i].append(rows);
                    false
                }
                None => true,
            },
        );
        taken
    }

    /// Every row left, by upsert, taken.
    fn take_all_deferred(&self) -> Vec<(RowUpsert, Vec<serde_json::Value>)> {
        std::mem::take(&mut *self.deferred_rows())
    }

    fn deferred_rows(&self) -> std::sync::MutexGuard<'_, Vec<(RowUpsert, Vec<serde_json::Value>)>> {
        // Held for no await; a panic while it was held left a whole list either way.
        self.deferred
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Writes what no reaction's statement took from `recording`: the inbox rows and the rows
/// left with it, in one statement (none if there is nothing).
pub(crate) async fn write_left(
    conn: &mut PgConnection,
    recording: &Recording<'_>,
) -> Result<(), sqlx::Error> {
    let events = recording.take().unwrap_or_default();
    let deferred = recording.take_all_deferred();
    if deferred.is_empty() {
        return insert(conn, events).await;
    }
    let upserts: Vec<RowUpsert> = deferred.iter().map(|(upsert, _)| *upsert).collect();
    let sql = format!(
        "WITH recorded AS ({}),\n{}",
        insert_sql(1, ""),
        RowUpsert::ctes(&upserts, 9)
    );
    let mut query = bind_rows(sqlx::query(&sql), events)?;
    for (_, rows) in &deferred {
        query = query.bind(rows);
    }
    query.execute(conn).await?;
    Ok(())
}

/// Foreign events recorded after `after_seq` and up to `up_to`, in receipt order, with their
/// `seq`: what a rebuild of a projection of foreign events replays.
pub(crate) async fn read_inbox_range<'e>(
    executor: impl PgExecutor<'e>,
    after_seq: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<(i64, ForeignEvent)>, sqlx::Error> {
    let rows: Vec<InboxRow> = sqlx::query_as(
        "SELECT seq, event_id, stream_id, stream_version, event_type, schema_version, payload, \
                metadata, source_position \
         FROM inbox WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
    )
    .bind(after_seq)
    .bind(up_to)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.seq,
                ForeignEvent {
                    event_id: r.event_id,
                    event_type: r.event_type,
                    stream_id: r.stream_id,
                    stream_version: r.stream_version,
                    source_position: r.source_position,
                    schema_version: r.schema_version,
                    payload: r.payload,
                    metadata: r.metadata.0,
                },
            )
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct InboxRow {
    seq: i64,
    event_id: Uuid,
    stream_id: String,
    stream_version: i64,
    event_type: String,
    schema_version: i32,
    payload: serde_json::Value,
    metadata: sqlx::types::Json<Metadata>,
    source_position: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_are_stable_and_taken_once_in_ascending_order() {
        // Changing the hash would let an old and a new release lock differently during a rollout.
        let stream_key = |stream: &str| locks::inbox_stream(stream).1;
        let (stream_lock_class, _) = locks::inbox_stream("");
        assert_eq!(
            stream_key(""),
            i32::from_ne_bytes(0x811c_9dc5u32.to_ne_bytes())
        );
        let sql = begin_and_lock(&["b", "a", "b"]);
        let (a, b) = (stream_key("a"), stream_key("b"));
        let (low, high) = (a.min(b), a.max(b));
        assert!(
            sql.starts_with("BEGIN; SELECT pg_advisory_xact_lock_shared("),
            "{sql}"
        );
        assert!(
            sql.ends_with(&format!(
                "SELECT pg_advisory_xact_lock({stream_lock_class}, {low}), \
                 pg_advisory_xact_lock({stream_lock_class}, {high});"
            )),
            "{sql}"
        );
    }
}
