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
//! background for an admin endpoint and reports on them; each service's `replay` command
//! runs them from a terminal through `service_kit::replay_cli`, which draws the progress the
//! library reports through a callback.
//! [`rebuild_if_missing`] builds, at a service's start, a read model whose tables are empty
//! while its events are not (a database restored from its events alone).
//! [`Target`] (in `target`) names what is rebuilt and from which [`Source`]; `sources` builds
//! and swaps for each source; `shadow` manages the shadow schema.

mod missing;
mod registry;
mod shadow;
mod sources;
mod target;

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::locks;
use crate::retry::Backoff;
use crate::EventStore;

pub use missing::rebuild_if_missing;
pub use registry::{ProjectionStatus, RebuildState, RebuildStatus, Rebuilds};
pub use target::{readers, Source, Target};

/// Events per page (and per shadow transaction) unless told otherwise.
pub const DEFAULT_PAGE_SIZE: i64 = 1000;
/// How long the swap waits for a lock (the live writer's batch, readers of the tables) before
/// it gives up and tries again: waiting longer would hold up the readers queued behind it.
const SWAP_LOCK_TIMEOUT: &str = "5s";
const SWAP_ATTEMPTS: u32 = 5;

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
    shadow::prepare(pool, &live_schema, target.tables()).await?;
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
            if let Err(drop_error) = shadow::discard(pool, target.tables()).await {
                tracing::warn!(error = %drop_error, "cannot drop the shadow tables");
            }
            tracing::warn!(projection = %target.name(), error = %e, "rebuild abandoned");
            return Err(e);
        }
    };
    let elapsed = started.elapsed();
    let rows_written = shadow::count_rows(pool, &run.live_schema, target.tables()).await?;
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
        let source = self.target.source().clone();
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
                shadow::create_deferred_indexes(pool, &self.live_schema, self.target.tables())
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
        shadow::analyze(pool, self.target.tables()).await?;
        let mut attempt = 1;
        let mut backoff = Backoff::default();
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
                    backoff.wait(self.shutdown).await;
                    self.check_cancelled()?;
                    attempt += 1;
                }
                other => return other,
            }
        }
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
        let key = locks::rebuild(projection);
        if locks::try_lock(&mut conn, key).await? {
            Ok(Some(RebuildLock { conn, key }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    pub(crate) async fn release(mut self) {
        locks::unlock(&mut self.conn, self.key).await;
        let _ = self.conn.close().await;
    }
}

/// Whether some process (this one or another, such as the `replay` CLI) is rebuilding
/// `projection` in this database now.
pub async fn rebuild_running(pool: &PgPool, projection: &str) -> Result<bool, sqlx::Error> {
    Ok(locks::holder(pool, locks::rebuild(projection))
        .await?
        .is_some())
}
