//! Rebuilding a projection from the events in the service's own database, online.
//!
//! [`rebuild`] builds the projection's tables afresh beside the live ones (shadow tables in
//! schema `rebuild`), one page of events per short transaction, then swaps them in with ONE
//! short transaction. That transaction first stops the projection's live writer, catches the
//! shadow up to the last event the writer can have seen, moves the shadow tables into place
//! and hands the writer the position the shadow reached. Readers see the old rows until that
//! commit and the new rows after it; the live writer applies every later event, once.
//! Transactions stay short on purpose: readers of the store only hand out events below the
//! server-wide snapshot horizon (docs/adr/0001-no-skip-positions.md), so one long writing
//! transaction would stall every relay and projector. docs/adr/0002-online-rebuild.md has the
//! reasoning and the options that were not taken.
//!
//! - Own events ([`Source::Store`]) are read with `read_all`, which never skips. The live
//!   writer is the `Projector`; the swap locks the checkpoint row its batches lock.
//! - Foreign events ([`Source::Inbox`]) are read from the inbox in receipt order (`seq`), only
//!   up to a horizon below which no recording transaction is in flight. The live writer is a
//!   consumer handler; the swap takes the inbox lock every recording transaction shares.
//!
//! Pages are streamed (a reader task reads the next page while the previous one is applied),
//! so memory is bounded by the page size whatever the number of events. The shadow tables
//! keep only their unique indexes while they fill; the others are built concurrently at the
//! end, before a second pass and the swap. [`Rebuilds`] runs rebuilds in the
//! background for an admin endpoint and reports on them; [`cli`] runs them with progress.

pub mod cli;
mod registry;
mod shadow;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::consumer::{ForeignEvent, Reaction};
use crate::inbox;
use crate::leader::lock_key;
use crate::projection::{checkpoint_name, Projection};
use crate::{checkpoint, EventStore, RecordedEvent};

pub use registry::{ProjectionStatus, RebuildState, RebuildStatus, Rebuilds};

/// Events per page (and per shadow transaction) unless told otherwise.
pub const DEFAULT_PAGE_SIZE: i64 = 1000;
/// How long the swap waits for a lock (the live writer's batch, readers of the tables) before
/// it gives up and tries again: waiting longer would hold up the readers queued behind it.
const SWAP_LOCK_TIMEOUT: &str = "5s";
const SWAP_ATTEMPTS: u32 = 5;

/// Where a projection's events come from, and so who its live writer is.
#[derive(Clone)]
pub enum Source {
    /// The service's own events, applied live by a `Projector` (checkpoint
    /// `projection:<name>`).
    Store(Arc<dyn Projection>),
    /// The service's own events, applied live by every appending transaction (the store's
    /// inline projections, [`EventStore::with_inline`]); no checkpoint.
    Inline(Arc<dyn Projection>),
    /// The other service's events as recorded in the inbox, applied live by this consumer
    /// handler inside the recording transaction. Only the projection's handler: replaying a
    /// reaction that appends events would act twice.
    Inbox(Arc<dyn Reaction>),
}

/// A projection that can be rebuilt: its name, the tables it writes, and its source.
#[derive(Clone)]
pub struct Target {
    name: String,
    tables: Vec<String>,
    source: Source,
}

impl Target {
    /// A projection of the service's own events that writes `tables`.
    pub fn store(projection: Arc<dyn Projection>, tables: &[&str]) -> Self {
        Target {
            name: projection.name().to_owned(),
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            source: Source::Store(projection),
        }
    }

    /// A projection of the service's own events that the store applies inline, in every
    /// appending transaction, and that writes `tables`.
    pub fn inline(projection: Arc<dyn Projection>, tables: &[&str]) -> Self {
        Target {
            name: projection.name().to_owned(),
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            source: Source::Inline(projection),
        }
    }

    /// A projection of foreign events, kept by the consumer handler `handler`, that writes
    /// `tables`.
    pub fn inbox(handler: Arc<dyn Reaction>, tables: &[&str]) -> Self {
        Target {
            name: handler.name().to_owned(),
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            source: Source::Inbox(handler),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// `events` (own events from the store) or `inbox` (foreign events).
    pub fn source_kind(&self) -> &'static str {
        match self.source {
            Source::Store(_) | Source::Inline(_) => "events",
            Source::Inbox(_) => "inbox",
        }
    }
}

/// The readers of a service's store: its relay and every projection of its own events that a
/// projector keeps (inline projections and projections of the other service's events are
/// applied as events are appended or recorded: no lag).
pub fn readers(relay_checkpoint: &str, targets: &[Target]) -> Vec<crate::metrics::Reader> {
    let projections = targets
        .iter()
        .filter(|t| matches!(t.source(), Source::Store(_)))
        .map(|t| crate::metrics::Reader::Projection(t.name().to_owned()));
    std::iter::once(crate::metrics::Reader::Relay(relay_checkpoint.to_owned()))
        .chain(projections)
        .collect()
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Events per page, read in one query and applied in one transaction.
    pub page_size: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Pages are applied to the shadow tables.
    Building,
    /// The last events are applied and the tables swapped.
    Swapping,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Building => "building",
            Phase::Swapping => "swapping",
        }
    }
}

/// How far a rebuild has got, reported after every page.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub phase: Phase,
    pub events_read: u64,
    /// Events in the source when the rebuild started (more may arrive meanwhile); never less
    /// than `events_read`.
    pub events_total: u64,
}

/// What a finished rebuild did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub projection: String,
    pub events_read: u64,
    /// Rows in the rebuilt tables when the rebuild finished.
    pub rows_written: u64,
    /// From the start to the commit of the swap.
    pub elapsed: Duration,
    /// Where the live writer carries on: a store position, or an inbox `seq`.
    pub position: i64,
}

impl Report {
    pub fn events_per_second(&self) -> f64 {
        self.events_read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("no projection is named {0:?}")]
    Unknown(String),
    #[error("a rebuild of {0} is already running")]
    InProgress(String),
    #[error("the rebuild of {0} was cancelled")]
    Cancelled(String),
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for RebuildError {
    fn from(e: anyhow::Error) -> Self {
        RebuildError::Failed(e)
    }
}

impl From<sqlx::Error> for RebuildError {
    fn from(e: sqlx::Error) -> Self {
        RebuildError::Failed(e.into())
    }
}

impl From<crate::StoreError> for RebuildError {
    fn from(e: crate::StoreError) -> Self {
        RebuildError::Failed(e.into())
    }
}

/// Rebuilds `target` from its events while the service keeps running (see the module docs).
/// Only one rebuild per projection runs at a time, across processes: a second one is
/// `InProgress`. `progress` is called after every page. On error or cancellation the live
/// tables are untouched and the shadow tables are dropped.
pub async fn rebuild(
    store: &EventStore,
    target: &Target,
    options: &Options,
    progress: &(dyn Fn(&Progress) + Send + Sync),
    shutdown: &CancellationToken,
) -> Result<Report, RebuildError> {
    let lock = RebuildLock::try_acquire(store, target.name())
        .await?
        .ok_or_else(|| RebuildError::InProgress(target.name().to_owned()))?;
    let result = rebuild_locked(store, target, options, progress, shutdown).await;
    lock.release().await;
    result
}

/// The body of [`rebuild`], for a caller that already holds the projection's rebuild lock.
pub(crate) async fn rebuild_locked(
    store: &EventStore,
    target: &Target,
    options: &Options,
    progress: &(dyn Fn(&Progress) + Send + Sync),
    shutdown: &CancellationToken,
) -> Result<Report, RebuildError> {
    let started = Instant::now();
    let pool = store.pool();
    let live_schema = shadow::live_schema(pool).await?;
    tracing::debug!(projection = %target.name(), "rebuild started");
    shadow::prepare(pool, &live_schema, &target.tables).await?;
    let mut run = Run {
        store,
        target,
        page_size: options.page_size.max(1),
        live_schema,
        progress,
        shutdown,
        events_read: 0,
        events_total: 0,
    };
    let position = match run.build_and_swap().await {
        Ok(position) => position,
        Err(e) => {
            if let Err(drop_error) = shadow::discard(pool, &target.tables).await {
                tracing::warn!(error = %drop_error, "cannot drop the shadow tables");
            }
            tracing::warn!(projection = %target.name(), error = %e, "rebuild abandoned");
            return Err(e);
        }
    };
    let elapsed = started.elapsed();
    let rows_written = shadow::count_rows(pool, &run.live_schema, &target.tables).await?;
    let report = Report {
        projection: target.name().to_owned(),
        events_read: run.events_read,
        rows_written,
        elapsed,
        position,
    };
    tracing::debug!(
        projection = %target.name(),
        events = report.events_read,
        rows = report.rows_written,
        seconds = elapsed.as_secs_f64(),
        position,
        "rebuild committed"
    );
    Ok(report)
}

/// One rebuild in progress.
struct Run<'a> {
    store: &'a EventStore,
    target: &'a Target,
    page_size: i64,
    live_schema: String,
    progress: &'a (dyn Fn(&Progress) + Send + Sync),
    shutdown: &'a CancellationToken,
    events_read: u64,
    events_total: u64,
}

impl Run<'_> {
    async fn build_and_swap(&mut self) -> Result<i64, RebuildError> {
        let pool = self.store.pool();
        let mut conn = pool.acquire().await?;
        let source = self.target.source.clone();
        let total = match source {
            Source::Store(_) | Source::Inline(_) => "SELECT count(*) FROM events",
            Source::Inbox(_) => "SELECT count(*) FROM inbox",
        };
        self.events_total = count(pool, total).await?;
        self.report(Phase::Building);
        let mut after = 0;
        // Twice: the bulk of the events, then, once the deferred indexes are built, what
        // arrived meanwhile, so that the swap has little left to apply.
        for pass in 0..2 {
            if pass == 1 {
                shadow::create_deferred_indexes(pool, &self.live_schema, &self.target.tables)
                    .await?;
            }
            after = match &source {
                Source::Store(projection) | Source::Inline(projection) => {
                    self.build_from_store(&**projection, &mut conn, after)
                        .await?
                }
                Source::Inbox(handler) => {
                    self.build_from_inbox(&**handler, &mut conn, after).await?
                }
            };
        }
        shadow::analyze(pool, &self.target.tables).await?;
        let mut attempt = 1;
        loop {
            let swapped = match &source {
                Source::Store(projection) => self.swap_store(&**projection, &mut conn, after).await,
                Source::Inline(projection) => {
                    self.swap_inline(&**projection, &mut conn, after).await
                }
                Source::Inbox(handler) => self.swap_inbox(&**handler, &mut conn, after).await,
            };
            match swapped {
                // The failed attempt rolled back whole; the shadow tables are still valid.
                Err(e) if attempt < SWAP_ATTEMPTS && waited_too_long(&e) => {
                    tracing::warn!(attempt, error = %e, "the swap gave up waiting for a lock; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    self.check_cancelled()?;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Applies pages of `read_all` after `from` to the shadow until a page comes back short
    /// (the head is near); returns the position of the last event applied.
    async fn build_from_store(
        &mut self,
        projection: &dyn Projection,
        conn: &mut PgConnection,
        from: i64,
    ) -> Result<i64, RebuildError> {
        let (sender, mut pages) = mpsc::channel::<Vec<RecordedEvent>>(1);
        let (store, size, shutdown) = (self.store.clone(), self.page_size, self.shutdown.clone());
        let reader = async move {
            let mut after = from;
            loop {
                let page = store.read_all(after, size).await?;
                let full = page.len() as i64 == size;
                let Some(last) = page.last() else { break };
                after = last.position;
                if sender.send(page).await.is_err() || !full || shutdown.is_cancelled() {
                    break;
                }
            }
            Ok::<(), RebuildError>(())
        };
        let mut position = from;
        let applier = async {
            while let Some(page) = pages.recv().await {
                self.check_cancelled()?;
                let mut tx = self.shadow_transaction(conn).await?;
                projection.apply_batch(&mut tx, &page).await?;
                tx.commit().await?;
                position = page.last().map_or(position, |e| e.position);
                self.advance(page.len(), Phase::Building);
            }
            Ok::<(), RebuildError>(())
        };
        pipeline(reader, applier).await?;
        self.check_cancelled()?;
        Ok(position)
    }

    /// One short transaction: stops the projector (its checkpoint row), applies what the
    /// shadow lacks up to the safe head, swaps, and sets the checkpoint to where the shadow
    /// got. Returns that position.
    ///
    /// Why nothing is missed or applied twice: the projector applies a batch only while it
    /// holds the checkpoint row and skips events at or below the checkpoint it finds there
    /// (`projection::apply_batch`). Every batch it has fetched lies below the snapshot horizon
    /// of its fetch; the horizon never moves back, so the `read_all` here, later, returns at
    /// least up to every such batch's end. After the commit the projector finds the new
    /// checkpoint, skips what the shadow already has and applies the rest to the new tables.
    async fn swap_store(
        &mut self,
        projection: &dyn Projection,
        conn: &mut PgConnection,
        mut after: i64,
    ) -> Result<i64, RebuildError> {
        let name = checkpoint_name(projection.name());
        let mut tx = conn.begin().await?;
        limit_lock_waits(&mut tx).await?;
        let live_checkpoint = checkpoint::lock(&mut tx, &name).await?;
        shadow::write_to_shadow(&mut tx, &self.live_schema).await?;
        let mut read = 0;
        loop {
            let page = self.store.read_all(after, self.page_size).await?;
            let Some(last) = page.last() else { break };
            projection.apply_batch(&mut tx, &page).await?;
            after = last.position;
            read += page.len();
        }
        shadow::write_to_live(&mut tx, &self.live_schema).await?;
        shadow::swap(&mut tx, &self.live_schema, &self.target.tables).await?;
        if live_checkpoint > after {
            // Only possible if the checkpoint was set past the last stored event by hand:
            // there is nothing between the two positions to apply.
            tracing::warn!(
                live_checkpoint,
                after,
                "the live checkpoint is ahead of the store"
            );
        }
        let position = after.max(live_checkpoint);
        checkpoint::reset(&mut *tx, &name, position).await?;
        tx.commit().await?;
        self.advance(read, Phase::Swapping);
        Ok(position)
    }

    /// One short transaction that keeps every appending transaction out (the `SHARE` lock on
    /// `events` conflicts with the lock each `INSERT` holds to its commit), applies every
    /// event committed after `after`, and swaps. Returns the position the shadow reached.
    ///
    /// Why nothing is missed or applied twice: once the lock is granted no append is in
    /// flight, so every event stored is committed and the read below sees it (read without
    /// the snapshot horizon, which other transactions that have not appended yet may hold
    /// back). Every append that comes after the commit applies its events to the new tables
    /// itself. Events below `after` were all read while building (`read_all` never skips).
    async fn swap_inline(
        &mut self,
        projection: &dyn Projection,
        conn: &mut PgConnection,
        mut after: i64,
    ) -> Result<i64, RebuildError> {
        let mut tx = conn.begin().await?;
        limit_lock_waits(&mut tx).await?;
        sqlx::query("LOCK TABLE events IN SHARE MODE")
            .execute(&mut *tx)
            .await?;
        shadow::write_to_shadow(&mut tx, &self.live_schema).await?;
        let mut read = 0;
        loop {
            let page = crate::store::read_committed_on(&mut tx, after, self.page_size).await?;
            let Some(last) = page.last() else { break };
            projection.apply_batch(&mut tx, &page).await?;
            after = last.position;
            read += page.len();
        }
        shadow::write_to_live(&mut tx, &self.live_schema).await?;
        shadow::swap(&mut tx, &self.live_schema, &self.target.tables).await?;
        tx.commit().await?;
        self.advance(read, Phase::Swapping);
        Ok(after)
    }

    /// Applies inbox rows after `from` below successive horizons until few remain; returns
    /// the `seq` of the last row applied.
    async fn build_from_inbox(
        &mut self,
        handler: &dyn Reaction,
        conn: &mut PgConnection,
        from: i64,
    ) -> Result<i64, RebuildError> {
        let (sender, mut pages) = mpsc::channel::<Vec<(i64, ForeignEvent)>>(1);
        let (pool, size, shutdown) = (
            self.store.pool().clone(),
            self.page_size,
            self.shutdown.clone(),
        );
        let reader = async move {
            let mut after = from;
            let mut horizon = inbox_horizon(&pool).await?;
            loop {
                let page = inbox::read_inbox_range(&pool, after, horizon, size).await?;
                let full = page.len() as i64 == size;
                if let Some((seq, _)) = page.last() {
                    after = *seq;
                    if sender.send(page).await.is_err() {
                        break;
                    }
                }
                if full {
                    continue;
                }
                let next = inbox_horizon(&pool).await?;
                if next - after <= size || shutdown.is_cancelled() {
                    // Few enough left for the swap to apply.
                    break;
                }
                horizon = next;
            }
            Ok::<(), RebuildError>(())
        };
        let mut position = from;
        let applier = async {
            while let Some(page) = pages.recv().await {
                self.check_cancelled()?;
                let mut tx = self.shadow_transaction(conn).await?;
                apply_inbox_page(handler, &mut tx, &page).await?;
                tx.commit().await?;
                position = page.last().map_or(position, |(seq, _)| *seq);
                self.advance(page.len(), Phase::Building);
            }
            Ok::<(), RebuildError>(())
        };
        pipeline(reader, applier).await?;
        self.check_cancelled()?;
        Ok(position)
    }

    /// One short transaction under the exclusive inbox lock: no recording transaction is in
    /// flight, so every row after `after` is final; they are applied in `seq` order (within a
    /// stream that is version order: a version is only recorded once its predecessor has
    /// committed), then the tables are swapped. Transactions that queued for the lock apply
    /// their events to the new tables after the commit.
    async fn swap_inbox(
        &mut self,
        handler: &dyn Reaction,
        conn: &mut PgConnection,
        mut after: i64,
    ) -> Result<i64, RebuildError> {
        let mut tx = conn.begin().await?;
        limit_lock_waits(&mut tx).await?;
        inbox::lock_exclusive(&mut tx).await?;
        shadow::write_to_shadow(&mut tx, &self.live_schema).await?;
        let mut read = 0;
        loop {
            let page = inbox::read_inbox_range(&mut *tx, after, i64::MAX, self.page_size).await?;
            let Some((seq, _)) = page.last() else { break };
            let seq = *seq;
            apply_inbox_page(handler, &mut tx, &page).await?;
            after = seq;
            read += page.len();
        }
        shadow::write_to_live(&mut tx, &self.live_schema).await?;
        shadow::swap(&mut tx, &self.live_schema, &self.target.tables).await?;
        tx.commit().await?;
        self.advance(read, Phase::Swapping);
        Ok(after)
    }

    async fn shadow_transaction<'c>(
        &self,
        conn: &'c mut PgConnection,
    ) -> Result<sqlx::Transaction<'c, sqlx::Postgres>, RebuildError> {
        let mut tx = conn.begin().await?;
        shadow::write_to_shadow(&mut tx, &self.live_schema).await?;
        // A page lost in a crash costs nothing: a rebuild that dies is started over and its
        // shadow dropped. The swap commits synchronously.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    fn check_cancelled(&self) -> Result<(), RebuildError> {
        if self.shutdown.is_cancelled() {
            return Err(RebuildError::Cancelled(self.target.name().to_owned()));
        }
        Ok(())
    }

    fn advance(&mut self, events: usize, phase: Phase) {
        self.events_read += events as u64;
        self.report(phase);
    }

    fn report(&mut self, phase: Phase) {
        self.events_total = self.events_total.max(self.events_read);
        (self.progress)(&Progress {
            phase,
            events_read: self.events_read,
            events_total: self.events_total,
        });
    }
}

/// Runs the page reader as a task of its own, so that decoding the next page (client CPU)
/// overlaps applying this one, and waits for both. Memory stays at the page in hand plus the
/// one in the channel plus the one being read.
async fn pipeline<R, A>(reader: R, applier: A) -> Result<(), RebuildError>
where
    R: std::future::Future<Output = Result<(), RebuildError>> + Send + 'static,
    A: std::future::Future<Output = Result<(), RebuildError>>,
{
    let reader = tokio::spawn(reader);
    let abort = reader.abort_handle();
    // The applier ends first on error or cancellation (dropping the receiver stops the
    // reader at its next page); the reader's own error then matters less than the applier's.
    let applied = applier.await;
    if applied.is_err() {
        abort.abort();
    }
    let read = match reader.await {
        Ok(read) => read,
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => Err(RebuildError::Failed(anyhow::anyhow!(
            "the page reader failed: {e}"
        ))),
    };
    applied.and(read)
}

/// Applies inbox rows with the projection's consumer handler, as the consumer did.
async fn apply_inbox_page(
    handler: &dyn Reaction,
    tx: &mut PgConnection,
    page: &[(i64, ForeignEvent)],
) -> anyhow::Result<()> {
    for (seq, event) in page {
        handler.handle(&mut *tx, event).await.map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "applying inbox row {seq} ({} {}@{})",
                event.event_type, event.stream_id, event.stream_version
            ))
        })?;
    }
    Ok(())
}

/// The highest inbox `seq` below which every row is final: taken under the exclusive inbox
/// lock, when no recording transaction is in flight, so every `seq` drawn so far is committed
/// or rolled back, and later ones are drawn higher (the identity does not cache values).
/// Consumers wait for the moment the lock is held.
async fn inbox_horizon(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    inbox::lock_exclusive(&mut tx).await?;
    let horizon: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM inbox")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(horizon)
}

async fn count(pool: &PgPool, sql: &str) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

async fn limit_lock_waits(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A lock wait that hit `lock_timeout` (55P03), or a deadlock the server broke (40P01).
fn waited_too_long(error: &RebuildError) -> bool {
    let RebuildError::Failed(error) = error else {
        return false;
    };
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("55P03" | "40P01"))
        )
    })
}

/// The session advisory lock that lets one rebuild per projection run at a time, across
/// processes. Held on a dedicated connection outside any transaction, so it holds back no
/// snapshot horizon; it dies with the connection if the process does.
pub(crate) struct RebuildLock {
    conn: PgConnection,
    key: i64,
}

impl RebuildLock {
    pub(crate) async fn try_acquire(
        store: &EventStore,
        projection: &str,
    ) -> Result<Option<RebuildLock>, sqlx::Error> {
        let options = store.pool().connect_options();
        let mut conn = PgConnection::connect_with(&options).await?;
        let key = rebuild_lock_key(projection);
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        if locked {
            Ok(Some(RebuildLock { conn, key }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    pub(crate) async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}

/// The key of a projection's rebuild lock (apart from its projector's leadership key).
pub fn rebuild_lock_key(projection: &str) -> i64 {
    lock_key(&format!("rebuild:{projection}"))
}

/// Whether some process (this one or another, such as the `replay` CLI) is rebuilding
/// `projection` in this database now.
pub async fn rebuild_running(pool: &PgPool, projection: &str) -> Result<bool, sqlx::Error> {
    let key = u64::from_ne_bytes(rebuild_lock_key(projection).to_ne_bytes());
    // pg_locks shows a one-key advisory lock as classid = high half, objid = low half.
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND classid::bigint = $1 AND objid::bigint = $2)",
    )
    .bind((key >> 32) as i64)
    .bind((key & 0xffff_ffff) as i64)
    .fetch_one(pool)
    .await
}
