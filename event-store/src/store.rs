//! Appends with optimistic concurrency and idempotent retry; reads by stream and in global order.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::metrics;
use crate::projection::Projection;
use crate::wakeup::Wakeup;
use crate::{AppendResult, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamAppend};

/// Appends to one or more streams in one statement, drawing positions from the writing
/// transaction's id (see the migration). The version checks and the insert are one statement:
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
const APPEND_SQL: &str = r#"
WITH streams AS (
    SELECT s.stream_id, s.expected, s.idx,
           coalesce(l.stream_version, 0) AS version, coalesce(l.position, 0) AS position
    FROM unnest($1::text[], $2::int8[]) WITH ORDINALITY AS s(stream_id, expected, idx)
    LEFT JOIN LATERAL (
        SELECT e.stream_version, e.position FROM events e WHERE e.stream_id = s.stream_id
        ORDER BY e.stream_version DESC LIMIT 1
    ) AS l ON true
), base AS (
    SELECT pg_current_xact_id()::text::bigint << 20 AS position
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
"#;

/// [`APPEND_SQL`] for the common case: one stream, as its transaction's first write (an
/// `append` on its own), so no earlier ordinal of the transaction can be in use and the
/// statement needs neither the per-stream join nor the look for earlier ordinals. Same
/// checks: the expected version, and the stream's last event below this transaction's
/// positions.
const APPEND_ONE_SQL: &str = r#"
WITH last AS (
    SELECT stream_version, position FROM events WHERE stream_id = $1
    ORDER BY stream_version DESC LIMIT 1
), current AS (
    SELECT coalesce((SELECT stream_version FROM last), 0) AS version,
           coalesce((SELECT position FROM last), 0) AS position,
           pg_current_xact_id()::text::bigint << 20 AS base
)
INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
SELECT current.base + t.ord, $1, current.version + t.ord,
       t.event_id, t.event_type, t.schema_version, t.payload, t.metadata
FROM current,
     unnest($3::uuid[], $4::text[], $5::int4[], $6::jsonb[], $7::jsonb[])
         WITH ORDINALITY AS t(event_id, event_type, schema_version, payload, metadata, ord)
WHERE ($2::bigint IS NULL OR current.version = $2) AND current.position < current.base
RETURNING position, stream_version, event_id, recorded_at
"#;

/// The lowest transaction id that may still commit events into this database's `events`, given
/// snapshot `s`: its `xmax`, or the oldest transaction in progress at the snapshot that is not
/// known to belong to another database, whichever is lower. Rows below `xid << 20` are final.
///
/// The server's own horizon (`pg_snapshot_xmin`) counts every database's transactions, so a
/// busy neighbour (the other service's consumer, another application on the same server)
/// would hold this store's readers back, and nothing here would wake them when it ends.
/// Transactions of other databases cannot write this table, so they are left out, but only
/// those that `pg_stat_activity` positively shows connected to another database: a
/// transaction that has ended meanwhile, or one the role may not see, still counts, so the
/// horizon is never later than it may be. (docs/adr/0001-no-skip-positions.md)
const HORIZON_SQL: &str = "\
    least(pg_snapshot_xmax(s)::text::bigint, \
          (SELECT min(x::text::bigint) FROM pg_snapshot_xip(s) AS x \
           WHERE x::text::bigint % 4294967296 NOT IN ( \
               SELECT backend_xid::text::bigint FROM pg_stat_activity \
               WHERE backend_xid IS NOT NULL AND datid IS NOT NULL \
                 AND datid <> (SELECT oid FROM pg_database \
                               WHERE datname = current_database()))))";

pub(crate) const EVENT_COLUMNS: &str =
    "position, stream_id, stream_version, event_id, event_type, \
     schema_version, payload, metadata, recorded_at";

/// Tries before an `Any` append that keeps losing races gives up.
const ANY_RETRIES: usize = 32;

/// A short, growing, jittered pause between `Any` retries, so writers racing on one stream
/// stop colliding in lockstep.
async fn retry_pause(attempt: usize) {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) % 1_000)
        .unwrap_or(0);
    let micros = 200 * (attempt as u64).min(10) + jitter;
    tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
}

/// The event store of one service database. Cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    pub(crate) wakeup: Arc<Wakeup>,
    /// Appends made through [`EventStore::append_in_tx`] by this process, so a caller can
    /// tell whether its transaction appended anything (and readers need waking).
    appends_in_tx: Arc<std::sync::atomic::AtomicU64>,
    /// Projections updated in every appending transaction (see [`EventStore::with_inline`]).
    inline: Arc<[Arc<dyn Projection>]>,
}

/// A page of `read_all`: the events that are safe to hand out, and whether committed events
/// beyond them are being held back until older transactions finish.
pub(crate) struct Page {
    pub events: Vec<RecordedEvent>,
    pub held_back: bool,
}

/// How one append statement ended, before any slow-path lookups.
enum Attempt {
    /// One result per stream, and the events as stored, in the order given.
    Appended(Vec<AppendResult>, Vec<RecordedEvent>),
    VersionMismatch,
    UniqueViolation,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        EventStore {
            pool,
            wakeup: Arc::new(Wakeup::default()),
            appends_in_tx: Arc::default(),
            inline: Arc::new([]),
        }
    }

    /// A store whose every append also applies `projections`, in the appending transaction
    /// (Marten calls them inline projections): the write's response and every read after it
    /// agree, whichever path appended (a command, a reaction), and no projector runs a
    /// transaction of its own per event. For projections of one service's own aggregates;
    /// [`crate::replay`] rebuilds them online like any other.
    pub fn with_inline(mut self, projections: Vec<Arc<dyn Projection>>) -> Self {
        self.inline = projections.into();
        self
    }

    /// The projections applied inline, by [`EventStore::with_inline`].
    pub fn inline_projections(&self) -> &[Arc<dyn Projection>] {
        &self.inline
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the store's migrations. Services with migrations of their own run both
    /// migrators on one database, so each ignores the other's entries.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_ignore_missing(true);
        migrator.run(&self.pool).await
    }

    /// Appends `events` to `stream_id` if its version matches `expected`.
    ///
    /// Retrying an append whose event ids are all stored with the same content returns the
    /// original result; an id stored with other content is `EventIdReused`.
    #[tracing::instrument(level = "debug", skip_all, fields(stream_id = %stream_id, n = events.len()), err)]
    pub async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, StoreError> {
        validate(stream_id, events)?;
        let appends = [Part {
            stream_id,
            expected,
            events,
        }];
        for tries in 0..ANY_RETRIES {
            if tries > 0 {
                retry_pause(tries).await;
            }
            let mut conn = self.pool.acquire().await?;
            let attempted = if self.inline.is_empty() {
                // One statement, its own transaction.
                attempt(&mut conn, &appends, true, false).await?
            } else {
                let mut tx = conn.begin().await?;
                let attempted = attempt(&mut tx, &appends, true, true).await?;
                if let Attempt::Appended(_, recorded) = &attempted {
                    self.apply_inline(&mut tx, recorded).await?;
                    tx.commit().await?;
                }
                attempted
            };
            if let Attempt::Appended(results, _) = attempted {
                self.wakeup.appended();
                metrics::appended(stream_id, events.len());
                return Ok(results[0]);
            }
            drop(conn);
            if let Some(original) = self.already_stored(events).await? {
                return Ok(summarise(&original));
            }
            let actual = self.stream_version(stream_id).await?;
            if expected != ExpectedVersion::Any {
                return Err(conflict(stream_id, expected, actual));
            }
        }
        Err(conflict(
            stream_id,
            expected,
            self.stream_version(stream_id).await?,
        ))
    }

    /// Appends to several streams in one transaction: all or nothing, each stream with its own
    /// expected version. Results come back in the order of `appends`.
    #[tracing::instrument(level = "debug", skip_all, fields(streams = appends.len()), err)]
    pub async fn append_multi(
        &self,
        appends: &[StreamAppend],
    ) -> Result<Vec<AppendResult>, StoreError> {
        for _ in 0..ANY_RETRIES {
            let mut tx = self.pool.begin().await?;
            match self.append_uncounted(&mut tx, appends).await {
                Ok(results) => {
                    tx.commit().await?;
                    self.wakeup.appended();
                    count_appended(appends);
                    return Ok(results);
                }
                Err(StoreError::Conflict { .. } | StoreError::EventIdReused { .. }) => {
                    drop(tx);
                    let events: Vec<NewEvent> =
                        appends.iter().flat_map(|a| a.events.clone()).collect();
                    if let Some(original) = self.already_stored(&events).await? {
                        return Ok(appends
                            .iter()
                            .map(|a| {
                                let rows: Vec<RecordedEvent> = original
                                    .iter()
                                    .filter(|r| a.events.iter().any(|e| e.event_id == r.event_id))
                                    .cloned()
                                    .collect();
                                summarise(&rows)
                            })
                            .collect());
                    }
                    if !retry_any(appends) {
                        return Err(self.first_conflict(appends).await?);
                    }
                }
                Err(other) => return Err(other),
            }
        }
        Err(self.first_conflict(appends).await?)
    }

    /// Appends inside the caller's transaction, in one statement whatever the number of
    /// streams (each stream at most once), so a reaction can record its events, its inbox
    /// entry and its checkpoint atomically. The inline projections are applied on the same
    /// transaction. On failure the transaction may be aborted: the caller rolls back, reloads
    /// and decides again. Readers are woken once the caller commits and calls
    /// [`EventStore::notify_appended`]. The appended-events counter counts them when the
    /// statements succeed, before the caller commits.
    pub async fn append_in_tx(
        &self,
        conn: &mut PgConnection,
        appends: &[StreamAppend],
    ) -> Result<Vec<AppendResult>, StoreError> {
        let results = self.append_uncounted(conn, appends).await?;
        count_appended(appends);
        self.appends_in_tx
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(results)
    }

    /// How many [`EventStore::append_in_tx`] calls of this process have succeeded so far: a
    /// caller compares it before and after its transaction to know whether to wake readers.
    /// (Another task's append in between only causes a wake-up too many.)
    pub fn appends_in_tx(&self) -> u64 {
        self.appends_in_tx
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn append_uncounted(
        &self,
        conn: &mut PgConnection,
        appends: &[StreamAppend],
    ) -> Result<Vec<AppendResult>, StoreError> {
        if appends.is_empty() {
            return Err(StoreError::Empty);
        }
        for a in appends {
            validate(&a.stream_id, &a.events)?;
        }
        let mut streams: Vec<&str> = appends.iter().map(|a| a.stream_id.as_str()).collect();
        streams.sort_unstable();
        if let Some(twice) = streams.windows(2).find(|w| w[0] == w[1]) {
            return Err(StoreError::StreamRepeated(twice[0].to_owned()));
        }
        match attempt(conn, &parts(appends), false, !self.inline.is_empty()).await? {
            Attempt::Appended(results, recorded) => {
                self.apply_inline(conn, &recorded).await?;
                Ok(results)
            }
            Attempt::VersionMismatch | Attempt::UniqueViolation => {
                let events: Vec<NewEvent> = appends.iter().flat_map(|a| a.events.clone()).collect();
                if let Some(reused) = self.reused_id(&events).await? {
                    return Err(StoreError::EventIdReused { event_id: reused });
                }
                Err(self.first_conflict(appends).await?)
            }
        }
    }

    async fn apply_inline(
        &self,
        conn: &mut PgConnection,
        recorded: &[RecordedEvent],
    ) -> Result<(), StoreError> {
        for projection in self.inline.iter() {
            if let Err(error) = projection.apply_batch(&mut *conn, recorded).await {
                // The database failing (gone away, shutting down) is told as such, so callers
                // answer 503 or retry, not report a bug.
                return Err(match error.downcast::<sqlx::Error>() {
                    Ok(e) => StoreError::Database(e),
                    Err(error) => StoreError::Projection {
                        projection: projection.name().to_owned(),
                        error: error.into(),
                    },
                });
            }
        }
        Ok(())
    }

    /// Wakes tailers after a transaction that used [`EventStore::append_in_tx`] committed.
    pub fn notify_appended(&self) {
        self.wakeup.appended();
    }

    /// The stream's current version (0 when it has no events).
    pub async fn stream_version(&self, stream_id: &str) -> Result<i64, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT stream_version FROM events WHERE stream_id = $1 \
             ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(stream_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(version.unwrap_or(0))
    }

    /// The stream's events from `from_version` (inclusive) in version order.
    pub async fn read_stream(
        &self,
        stream_id: &str,
        from_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(read_stream_on(&mut conn, stream_id, from_version).await?)
    }

    /// Up to `limit` events after `after_position`, in position order, never skipping: an
    /// event is returned only once no transaction that could still commit a lower position
    /// is running. Positions have gaps; pass the last returned position to continue.
    pub async fn read_all(
        &self,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(self.read_page(after_position, limit).await?.events)
    }

    pub(crate) async fn read_page(&self, after: i64, limit: i64) -> Result<Page, StoreError> {
        // The page and the horizon in one statement, so both see the same snapshot. Asking
        // `pg_stat_activity` costs a scan of every backend, so it is asked only when the
        // server's own horizon would hold back part of the page.
        let sql = format!(
            "WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s), \
                  page AS MATERIALIZED (SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 \
                                        ORDER BY position LIMIT $2), \
                  horizon AS MATERIALIZED ( \
                      SELECT CASE WHEN NOT EXISTS ( \
                                      SELECT 1 FROM page \
                                      WHERE position >= pg_snapshot_xmin(s)::text::bigint << 20) \
                                  THEN pg_snapshot_xmin(s)::text::bigint \
                                  ELSE {HORIZON_SQL} END AS xid \
                      FROM snap) \
             SELECT page.*, position < (horizon.xid << 20) AS safe \
             FROM page, horizon ORDER BY position"
        );
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            if !row.try_get::<bool, _>("safe")? {
                return Ok(Page {
                    events,
                    held_back: true,
                });
            }
            events.push(<RecordedEvent as sqlx::FromRow<_>>::from_row(row)?);
        }
        Ok(Page {
            events,
            held_back: false,
        })
    }

    /// The highest position stored (committed), 0 for an empty store.
    pub async fn head_position(&self) -> Result<i64, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(head)
    }

    /// The stored rows for these events if every id is stored with the same stream-independent
    /// content (type and payload); `EventIdReused` if any id is stored with other content.
    async fn already_stored(
        &self,
        events: &[NewEvent],
    ) -> Result<Option<Vec<RecordedEvent>>, StoreError> {
        let stored = self.stored_by_id(events).await?;
        if stored.is_empty() {
            return Ok(None);
        }
        for event in events {
            match stored.iter().find(|r| r.event_id == event.event_id) {
                Some(r) if r.event_type == event.event_type && r.payload == event.payload => {}
                _ => {
                    return Err(StoreError::EventIdReused {
                        event_id: event.event_id,
                    })
                }
            }
        }
        Ok(Some(stored))
    }

    async fn reused_id(&self, events: &[NewEvent]) -> Result<Option<Uuid>, StoreError> {
        Ok(self.stored_by_id(events).await?.first().map(|r| r.event_id))
    }

    async fn stored_by_id(&self, events: &[NewEvent]) -> Result<Vec<RecordedEvent>, StoreError> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id = ANY($1) ORDER BY position"
        );
        Ok(sqlx::query_as(&sql)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn first_conflict(&self, appends: &[StreamAppend]) -> Result<StoreError, StoreError> {
        for a in appends {
            let actual = self.stream_version(&a.stream_id).await?;
            if a.expected.required().is_some_and(|v| v != actual) {
                return Ok(conflict(&a.stream_id, a.expected, actual));
            }
        }
        // Every expectation holds now: the conflict was a race that has since resolved.
        let a = &appends[0];
        Ok(conflict(
            &a.stream_id,
            a.expected,
            self.stream_version(&a.stream_id).await?,
        ))
    }
}

/// The events of `stream_id` from `from_version` (inclusive) in version order, as the
/// caller's connection (its transaction) sees them, so a reaction decides on the state its
/// own transaction will append to.
pub async fn read_stream_on(
    conn: &mut PgConnection,
    stream_id: &str,
    from_version: i64,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version"
    );
    sqlx::query_as(&sql)
        .bind(stream_id)
        .bind(from_version)
        .fetch_all(conn)
        .await
}

/// Up to `limit` committed events after `position`, in position order, WITHOUT holding back
/// those above the snapshot horizon. Only safe while no append can be in flight (the caller
/// holds a lock that keeps appends out); use [`EventStore::read_all`] otherwise.
pub(crate) async fn read_committed_on(
    conn: &mut PgConnection,
    position: i64,
    limit: i64,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
    );
    sqlx::query_as(&sql)
        .bind(position)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// The events of several streams, each after its own version, in one query: by stream, in
/// version order. What a batch of reactions loads its aggregates with.
pub async fn read_streams_on(
    conn: &mut PgConnection,
    streams: &[(&str, i64)],
) -> Result<HashMap<String, Vec<RecordedEvent>>, sqlx::Error> {
    // LATERAL: one index range scan per stream, never a join over the whole table.
    let sql = format!(
        "SELECT e.* FROM unnest($1::text[], $2::int8[]) AS wanted(stream, after) \
         CROSS JOIN LATERAL (SELECT {EVENT_COLUMNS} FROM events \
                             WHERE stream_id = wanted.stream AND stream_version > wanted.after \
                             ORDER BY stream_version) AS e"
    );
    let rows: Vec<RecordedEvent> = sqlx::query_as(&sql)
        .bind(streams.iter().map(|(s, _)| *s).collect::<Vec<_>>())
        .bind(streams.iter().map(|(_, v)| *v).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
    let mut by_stream: HashMap<String, Vec<RecordedEvent>> = HashMap::new();
    for row in rows {
        by_stream
            .entry(row.stream_id.clone())
            .or_default()
            .push(row);
    }
    Ok(by_stream)
}

/// One stream's part of an append, borrowed.
struct Part<'a> {
    stream_id: &'a str,
    expected: ExpectedVersion,
    events: &'a [NewEvent],
}

fn parts(appends: &[StreamAppend]) -> Vec<Part<'_>> {
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
async fn attempt(
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

fn count_appended(appends: &[StreamAppend]) {
    for a in appends {
        metrics::appended(&a.stream_id, a.events.len());
    }
}

fn summarise(rows: &[RecordedEvent]) -> AppendResult {
    AppendResult {
        stream_version: rows.iter().map(|r| r.stream_version).max().unwrap_or(0),
        first_position: rows.iter().map(|r| r.position).min().unwrap_or(0),
        last_position: rows.iter().map(|r| r.position).max().unwrap_or(0),
    }
}

fn retry_any(appends: &[StreamAppend]) -> bool {
    appends.iter().all(|a| a.expected == ExpectedVersion::Any)
}

fn conflict(stream_id: &str, expected: ExpectedVersion, actual: i64) -> StoreError {
    StoreError::Conflict {
        stream_id: stream_id.to_owned(),
        expected,
        actual,
    }
}

/// Stream ids and event types become NATS subject tokens, so they are kept to a safe alphabet.
fn validate(stream_id: &str, events: &[NewEvent]) -> Result<(), StoreError> {
    let ok = |s: &str, max: usize, extra: &[char]| {
        !s.is_empty()
            && s.len() <= max
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
    };
    if !ok(stream_id, 200, &['-']) {
        return Err(StoreError::InvalidStreamId(stream_id.to_owned()));
    }
    if events.is_empty() {
        return Err(StoreError::Empty);
    }
    if let Some(e) = events.iter().find(|e| !ok(&e.event_type, 100, &[])) {
        return Err(StoreError::InvalidEventType(e.event_type.clone()));
    }
    Ok(())
}
