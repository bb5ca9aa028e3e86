//! Appends with optimistic concurrency and idempotent retry; reads by stream and in global order.
//!
//! `append` holds the append statements and their helpers, `read` every read, `epoch` what keeps
//! positions growing when the database moves to another cluster.

use std::sync::Arc;

use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::inbox::Recording;
use crate::metrics;
use crate::projection::Projection;
use crate::validate;
use crate::wakeup::Wakeup;
use crate::{AppendResult, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamAppend};

mod append;
mod epoch;
mod read;

pub use crate::snapshot::BatchSnapshot;
use append::{
    attempt, attempt_batch, attempt_command, conflict, count_appended, parts, retry_any,
    retry_pause, summarise, Attempt, InTransaction, Part, Returning, ANY_RETRIES,
};
pub(crate) use append::{row_ctes, ROWS_INPUT};
pub use append::{BatchSql, Beside, CommandSql, POSITION_BASE};
pub use epoch::PositionsContinued;
pub(crate) use read::{read_committed_on, EVENT_COLUMNS};
pub use read::{read_stream_on, read_streams_on};

/// The event store of one service database. Cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    pub(crate) wakeup: Arc<Wakeup>,
    /// Appends made through [`EventStore::append_in_tx`] by this process, so a caller can
    /// tell whether its transaction appended anything (and readers need waking).
    /// Projections updated in every appending transaction (see [`EventStore::with_inline`]).
    inline: Arc<[Arc<dyn Projection>]>,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        EventStore {
            pool,
            wakeup: Arc::new(Wakeup::default()),
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

    /// Applies the store's migrations, then makes sure positions continue above the stored
    /// ones should the database have been moved to another cluster
    /// ([`EventStore::continue_positions`]). Services with migrations of their own run both
    /// migrators on one database, so each ignores the other's entries.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_ignore_missing(true);
        migrator.run(&self.pool).await?;
        self.continue_positions().await?;
        Ok(())
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
        validate::append(stream_id, events)?;
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
                attempt(
                    &mut conn,
                    &appends,
                    InTransaction::FirstWrite,
                    Returning::Results,
                )
                .await?
            } else {
                let mut tx = conn.begin().await?;
                let attempted = attempt(
                    &mut tx,
                    &appends,
                    InTransaction::FirstWrite,
                    Returning::StoredEvents,
                )
                .await?;
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

    /// Appends a command's `events` to `stream_id` with everything the command writes beside
    /// them ([`Beside`]), in one statement ([`CommandSql`]) and so one round trip. Nothing is
    /// written unless the events are. The caller answers for the rows covering every inline
    /// projection (`aggregate::Commands::with_rows`).
    ///
    /// No retry here: a command that meets a concurrent append decides again on fresh state.
    /// A conflict is `Conflict`; events whose ids are stored already (an earlier attempt of
    /// the same keyed request) are `EventIdReused`.
    #[tracing::instrument(level = "debug", skip_all, fields(stream_id = %stream_id, n = events.len()), err)]
    pub async fn append_command(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        sql: &CommandSql,
        beside: &Beside<'_>,
    ) -> Result<AppendResult, StoreError> {
        validate::append(stream_id, events)?;
        let part = Part {
            stream_id,
            expected,
            events,
        };
        let mut conn = self.pool.acquire().await?;
        match attempt_command(&mut conn, &part, sql, beside).await? {
            Attempt::Appended(results, _) => {
                self.wakeup.appended();
                metrics::appended(stream_id, events.len());
                Ok(results[0])
            }
            Attempt::VersionMismatch | Attempt::UniqueViolation => {
                drop(conn);
                if let Some(reused) = self.reused_id(events).await? {
                    return Err(StoreError::EventIdReused { event_id: reused });
                }
                Err(conflict(
                    stream_id,
                    expected,
                    self.stream_version(stream_id).await?,
                ))
            }
        }
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
    /// [`EventStore::notify_appended`] (a reaction tells the consumer, which does:
    /// [`Recording::appended`]). The appended-events metric counts them when the statement
    /// succeeds, before the caller commits.
    pub async fn append_in_tx(
        &self,
        conn: &mut PgConnection,
        appends: &[StreamAppend],
    ) -> Result<Vec<AppendResult>, StoreError> {
        let results = self.append_uncounted(conn, appends).await?;
        count_appended(appends);
        Ok(results)
    }

    /// Appends a reaction's batch inside the caller's transaction with the snapshots and read
    /// model rows it computed from the states it decided on ([`BatchSql`]), in one statement
    /// whatever the number of streams (each stream at most once). Streams are inserted in the
    /// order given: writers that share streams give them in one global order, so that they
    /// wait for each other rather than deadlock. With the consumer's `recording`, the batch's
    /// inbox rows, and the rows deferred to it that the statement has upserts for, are
    /// written in the same statement. When the rows do not cover every inline
    /// projection of the store (by name), the append is [`EventStore::append_in_tx`]'s, its
    /// inline projections folded by the store and the snapshots written after it. Once it has
    /// appended, it tells the `recording` ([`Recording::appended`]). Failure as for
    /// [`EventStore::append_in_tx`].
    pub async fn append_batch(
        &self,
        conn: &mut PgConnection,
        appends: &[StreamAppend],
        sql: &BatchSql,
        snapshots: &[BatchSnapshot],
        rows: &[Vec<serde_json::Value>],
        recording: Option<&Recording<'_>>,
    ) -> Result<Vec<AppendResult>, StoreError> {
        let covered = self.inline.iter().all(|p| sql.models().contains(&p.name()));
        if !covered {
            let results = self.append_in_tx(conn, appends).await?;
            crate::snapshot::save_batch(conn, snapshots).await?;
            if let Some(recording) = recording {
                recording.appended();
            }
            return Ok(results);
        }
        self.check_appends(appends)?;
        let inbox = recording.and_then(Recording::take).unwrap_or_default();
        let deferred = match recording {
            Some(recording) => recording.take_deferred(sql.deferred()),
            None => vec![Vec::new(); sql.deferred().len()],
        };
        match attempt_batch(
            conn,
            &parts(appends),
            sql,
            snapshots,
            inbox,
            rows,
            &deferred,
        )
        .await?
        {
            Attempt::Appended(results, _) => {
                count_appended(appends);
                if let Some(recording) = recording {
                    recording.appended();
                }
                Ok(results)
            }
            Attempt::VersionMismatch | Attempt::UniqueViolation => {
                Err(self.failed_append(appends).await?)
            }
        }
    }

    /// Checks a multi-stream append before it runs: not empty, valid ids and types, each
    /// stream once.
    fn check_appends(&self, appends: &[StreamAppend]) -> Result<(), StoreError> {
        if appends.is_empty() {
            return Err(StoreError::Empty);
        }
        for a in appends {
            validate::append(&a.stream_id, &a.events)?;
        }
        let mut streams: Vec<&str> = appends.iter().map(|a| a.stream_id.as_str()).collect();
        streams.sort_unstable();
        if let Some(twice) = streams.windows(2).find(|w| w[0] == w[1]) {
            return Err(StoreError::StreamRepeated(twice[0].to_owned()));
        }
        Ok(())
    }

    /// Why a multi-stream append inserted nothing: an event id stored already, or the first
    /// stream not at its expected version.
    async fn failed_append(&self, appends: &[StreamAppend]) -> Result<StoreError, StoreError> {
        let events: Vec<NewEvent> = appends.iter().flat_map(|a| a.events.clone()).collect();
        if let Some(reused) = self.reused_id(&events).await? {
            return Ok(StoreError::EventIdReused { event_id: reused });
        }
        self.first_conflict(appends).await
    }

    async fn append_uncounted(
        &self,
        conn: &mut PgConnection,
        appends: &[StreamAppend],
    ) -> Result<Vec<AppendResult>, StoreError> {
        self.check_appends(appends)?;
        let returning = if self.inline.is_empty() {
            Returning::Results
        } else {
            Returning::StoredEvents
        };
        match attempt(
            conn,
            &parts(appends),
            InTransaction::AfterOtherWrites,
            returning,
        )
        .await?
        {
            Attempt::Appended(results, recorded) => {
                self.apply_inline(conn, &recorded).await?;
                Ok(results)
            }
            Attempt::VersionMismatch | Attempt::UniqueViolation => {
                Err(self.failed_append(appends).await?)
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
