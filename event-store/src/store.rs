//! Appends with optimistic concurrency and idempotent retry; reads by stream and in global order.

use std::sync::Arc;

use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::metrics;
use crate::wakeup::Wakeup;
use crate::{AppendResult, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamAppend};

/// Appends to one stream, drawing positions from the writing transaction's id (see the
/// migration). The version check and the insert are one statement; a concurrent append to the
/// same stream loses on the unique (stream_id, stream_version) constraint.
///
/// A stream's versions must also be in position order, or a reader in position order meets
/// version n+1 before n (and a projection that skips versions it has passed loses n). A
/// transaction that took its id before the stream's last event was committed would place its
/// events below that event, so such an append inserts nothing and is reported as a conflict:
/// the caller retries in a new transaction, with a newer id. Only transactions that wrote
/// something before appending (a consumer's inbox entry, an earlier stream of
/// `append_multi`) can meet this; a single-statement append takes its id after the stream's
/// last writer committed.
const APPEND_SQL: &str = r#"
WITH current_version AS (
    SELECT coalesce(max(stream_version), 0) AS version, coalesce(max(position), 0) AS position
    FROM events WHERE stream_id = $1
), base AS (
    SELECT pg_current_xact_id()::text::bigint << 20 AS position
), last_used AS (
    -- Earlier appends in the same transaction already used some ordinals.
    SELECT coalesce(max(e.position), b.position) AS position
    FROM base b LEFT JOIN events e ON e.position > b.position AND e.position < b.position + 1048576
    GROUP BY b.position
)
INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
SELECT last_used.position + t.ord, $1, current_version.version + t.ord,
       t.event_id, t.event_type, t.schema_version, t.payload, t.metadata
FROM current_version, last_used,
     unnest($3::uuid[], $4::text[], $5::int4[], $6::jsonb[], $7::jsonb[])
         WITH ORDINALITY AS t(event_id, event_type, schema_version, payload, metadata, ord)
WHERE ($2::bigint IS NULL OR current_version.version = $2)
  AND current_version.position <= last_used.position
RETURNING position, stream_version
"#;

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
}

/// A page of `read_all`: the events that are safe to hand out, and whether committed events
/// beyond them are being held back until older transactions finish.
pub(crate) struct Page {
    pub events: Vec<RecordedEvent>,
    pub held_back: bool,
}

/// How one append statement ended, before any slow-path lookups.
enum Attempt {
    Appended(AppendResult),
    VersionMismatch,
    UniqueViolation,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        EventStore {
            pool,
            wakeup: Arc::new(Wakeup::default()),
        }
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
    #[tracing::instrument(skip_all, fields(stream_id = %stream_id, n = events.len()), err)]
    pub async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, StoreError> {
        validate(stream_id, events)?;
        for tries in 0..ANY_RETRIES {
            if tries > 0 {
                retry_pause(tries).await;
            }
            let mut conn = self.pool.acquire().await?;
            match attempt(&mut conn, stream_id, expected, events).await? {
                Attempt::Appended(result) => {
                    self.wakeup.appended();
                    metrics::appended(stream_id, events.len());
                    return Ok(result);
                }
                Attempt::VersionMismatch | Attempt::UniqueViolation => {}
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
    #[tracing::instrument(skip_all, fields(streams = appends.len()), err)]
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

    /// Appends inside the caller's transaction, so a reaction can record its events, its inbox
    /// entry and its checkpoint atomically. On failure the transaction is aborted: the caller
    /// rolls back, reloads and decides again. Readers are woken once the caller commits and
    /// calls [`EventStore::notify_appended`]. The appended-events counter counts them when the
    /// statements succeed, before the caller commits.
    pub async fn append_in_tx(
        &self,
        conn: &mut PgConnection,
        appends: &[StreamAppend],
    ) -> Result<Vec<AppendResult>, StoreError> {
        let results = self.append_uncounted(conn, appends).await?;
        count_appended(appends);
        Ok(results)
    }

    async fn append_uncounted(
        &self,
        conn: &mut PgConnection,
        appends: &[StreamAppend],
    ) -> Result<Vec<AppendResult>, StoreError> {
        if appends.is_empty() {
            return Err(StoreError::Empty);
        }
        let mut results = Vec::with_capacity(appends.len());
        for a in appends {
            validate(&a.stream_id, &a.events)?;
            match attempt(conn, &a.stream_id, a.expected, &a.events).await? {
                Attempt::Appended(result) => results.push(result),
                Attempt::VersionMismatch | Attempt::UniqueViolation => {
                    if let Some(reused) = self.reused_id(&a.events).await? {
                        return Err(StoreError::EventIdReused { event_id: reused });
                    }
                    let actual = self.stream_version(&a.stream_id).await?;
                    return Err(conflict(&a.stream_id, a.expected, actual));
                }
            }
        }
        Ok(results)
    }

    /// Wakes tailers after a transaction that used [`EventStore::append_in_tx`] committed.
    pub fn notify_appended(&self) {
        self.wakeup.appended();
    }

    /// The stream's current version (0 when it has no events).
    pub async fn stream_version(&self, stream_id: &str) -> Result<i64, StoreError> {
        let version: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(stream_version), 0) FROM events WHERE stream_id = $1",
        )
        .bind(stream_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(version)
    }

    /// The stream's events from `from_version` (inclusive) in version order.
    pub async fn read_stream(
        &self,
        stream_id: &str,
        from_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version"
        );
        Ok(sqlx::query_as(&sql)
            .bind(stream_id)
            .bind(from_version)
            .fetch_all(&self.pool)
            .await?)
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
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, \
                    position < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20) AS safe \
             FROM events WHERE position > $1 ORDER BY position LIMIT $2"
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

async fn attempt(
    conn: &mut PgConnection,
    stream_id: &str,
    expected: ExpectedVersion,
    events: &[NewEvent],
) -> Result<Attempt, StoreError> {
    let metadata = events
        .iter()
        .map(|e| serde_json::to_value(&e.metadata))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))?;
    let rows = sqlx::query(APPEND_SQL)
        .bind(stream_id)
        .bind(expected.required())
        .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.schema_version).collect::<Vec<_>>())
        .bind(events.iter().map(|e| &e.payload).collect::<Vec<_>>())
        .bind(metadata)
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
    let mut result = AppendResult {
        stream_version: 0,
        first_position: i64::MAX,
        last_position: 0,
    };
    for row in rows {
        let position: i64 = row.try_get("position")?;
        let version: i64 = row.try_get("stream_version")?;
        result.stream_version = result.stream_version.max(version);
        result.first_position = result.first_position.min(position);
        result.last_position = result.last_position.max(position);
    }
    Ok(Attempt::Appended(result))
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
