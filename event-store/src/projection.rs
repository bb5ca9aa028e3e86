//! Projections of a service's own events: read models kept in the service's database.
//!
//! A [`Projector`] tails the store from the projection's checkpoint and applies a batch of
//! events and the new checkpoint in ONE transaction, so a crash never half-applies and a
//! replayed event is skipped. One projector per projection runs at a time across replicas
//! (a Postgres advisory lock keyed by the projection's name).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::wakeup::sleep_or_cancel;
use crate::{checkpoint, EventStore, RecordedEvent, Tail};

/// How often a waiting projector asks for leadership again.
const LEADERSHIP_RETRY: Duration = Duration::from_secs(1);
/// How often an idle leader checks that its lock connection (and so its lock) is still there.
const LEADERSHIP_CHECK: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A read model built from the service's own events.
pub trait Projection: Send + Sync + 'static {
    /// Stable name; the checkpoint is stored as `projection:<name>`.
    fn name(&self) -> &str;

    /// Applies one event inside the projector's transaction. An error rolls the whole batch
    /// back; the projector retries it later.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Applies a page of events in position order, with the same result as `apply` on each
    /// in turn. A rebuild ([`crate::replay`]) hands over pages of hundreds of events, so a
    /// projection whose rows fold many events may override this with set-based SQL (one read
    /// and one write per page instead of per event); the live projector keeps using `apply`.
    fn apply_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            for event in events {
                self.apply(&mut *tx, event).await.with_context(|| {
                    format!(
                        "applying event {} ({} {}@{})",
                        event.position, event.event_type, event.stream_id, event.stream_version
                    )
                })?;
            }
            Ok(())
        })
    }
}

/// The checkpoint name of a projection.
pub fn checkpoint_name(projection: &str) -> String {
    format!("projection:{projection}")
}

/// The session advisory-lock key that elects a projection's single projector: a stable 64-bit
/// FNV-1a hash of its checkpoint name, the same in every process and release. A rebuild that
/// must not run beside the live projector takes the same lock.
pub fn leadership_key(projection: &str) -> i64 {
    lock_key(&checkpoint_name(projection))
}

/// A stable 64-bit FNV-1a hash of `text`, for one-key advisory locks.
pub(crate) fn lock_key(text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Applies every event up to the store's current head once, without leadership (the
/// checkpoint's row lock still keeps it from applying an event twice), and returns the
/// projection's checkpoint afterwards.
pub async fn catch_up(store: &EventStore, projection: &dyn Projection) -> anyhow::Result<i64> {
    let name = checkpoint_name(projection.name());
    let mut conn = store.pool().acquire().await?;
    let mut position = checkpoint::load(&mut *conn, &name).await?;
    loop {
        let batch = store.read_all(position, 500).await?;
        if batch.is_empty() {
            return Ok(position);
        }
        position = apply_batch(&mut conn, projection, &name, &batch).await?;
    }
}

/// Applies the events of `batch` the checkpoint has not passed, and advances it, in one
/// transaction. Returns the checkpoint afterwards.
async fn apply_batch(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    name: &str,
    batch: &[RecordedEvent],
) -> anyhow::Result<i64> {
    let mut tx = conn.begin().await.context("beginning a transaction")?;
    let stored = checkpoint::lock(&mut tx, name)
        .await
        .context("locking the checkpoint")?;
    let mut last = stored;
    for event in batch.iter().filter(|e| e.position > stored) {
        projection.apply(&mut tx, event).await.with_context(|| {
            format!(
                "applying event {} ({} {}@{})",
                event.position, event.event_type, event.stream_id, event.stream_version
            )
        })?;
        last = event.position;
    }
    if last > stored {
        checkpoint::save(&mut *tx, name, last)
            .await
            .context("saving the checkpoint")?;
    }
    tx.commit().await.context("committing")?;
    Ok(last)
}

pub struct Projector {
    store: EventStore,
    projection: Arc<dyn Projection>,
    batch_size: i64,
}

/// Why a leader stopped leading.
enum Stepped {
    Shutdown,
    LostLeadership,
}

impl Projector {
    pub fn new(store: EventStore, projection: Arc<dyn Projection>) -> Self {
        Projector {
            store,
            projection,
            batch_size: 500,
        }
    }

    /// Events applied per transaction (500 by default).
    pub fn with_batch_size(mut self, batch_size: i64) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Runs until `shutdown`: waits for leadership, then applies events as they are appended.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = tracing::info_span!("projector", projection = %self.projection.name());
        self.run_instrumented(shutdown).instrument(span).await
    }

    async fn run_instrumented(self, shutdown: CancellationToken) {
        let key = leadership_key(self.projection.name());
        loop {
            let Some(mut conn) = self.acquire_leadership(key, &shutdown).await else {
                return;
            };
            tracing::info!("projector gained leadership");
            match self.lead(&mut conn, &shutdown).await {
                Stepped::Shutdown => {
                    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(key)
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                    tracing::info!("projector stopped");
                    return;
                }
                Stepped::LostLeadership => {
                    tracing::warn!("projector lost leadership (its lock connection broke)");
                }
            }
        }
    }

    /// A dedicated connection (outside the pool) holding the projection's session lock, or
    /// `None` on shutdown. The lock lives exactly as long as the connection.
    async fn acquire_leadership(
        &self,
        key: i64,
        shutdown: &CancellationToken,
    ) -> Option<PgConnection> {
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            let options = self.store.pool().connect_options();
            let mut conn = match PgConnection::connect_with(&options).await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "projector cannot connect; retrying");
                    backoff.wait(shutdown).await;
                    continue;
                }
            };
            backoff = Backoff::default();
            loop {
                let locked = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut conn)
                    .await;
                match locked {
                    Ok(true) => return Some(conn),
                    Ok(false) => {
                        sleep_or_cancel(LEADERSHIP_RETRY, shutdown).await;
                        if shutdown.is_cancelled() {
                            let _ = conn.close().await;
                            return None;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "projector cannot ask for leadership");
                        backoff.wait(shutdown).await;
                        break;
                    }
                }
            }
        }
        None
    }

    /// Applies batches on the lock connection itself, so every commit is made by the session
    /// that holds the lock: if that connection breaks, nothing more is committed.
    async fn lead(&self, conn: &mut PgConnection, shutdown: &CancellationToken) -> Stepped {
        let name = checkpoint_name(self.projection.name());
        let mut backoff = Backoff::default();
        'resume: loop {
            if shutdown.is_cancelled() {
                return Stepped::Shutdown;
            }
            let start = match checkpoint::load(&mut *conn, &name).await {
                Ok(position) => position,
                Err(e) => {
                    tracing::warn!(error = %e, "projector cannot load its checkpoint");
                    if !self.still_leading(conn, &mut backoff, shutdown).await {
                        return Stepped::LostLeadership;
                    }
                    continue 'resume;
                }
            };
            tracing::debug!(position = start, "projector tailing");
            let mut tail = Tail::new(self.store.clone(), start, self.batch_size);
            loop {
                if shutdown.is_cancelled() {
                    return Stepped::Shutdown;
                }
                let next = tokio::select! {
                    next = tail.next_batch(shutdown) => next,
                    _ = tokio::time::sleep(LEADERSHIP_CHECK) => {
                        // Idle: make sure the lock (its connection) is still ours.
                        if let Err(e) = sqlx::query("SELECT 1").execute(&mut *conn).await {
                            tracing::debug!(error = %e, "projector lock connection failed");
                            return Stepped::LostLeadership;
                        }
                        continue;
                    }
                };
                let batch = match next {
                    Ok(Some(batch)) => batch,
                    Ok(None) => return Stepped::Shutdown,
                    Err(e) => {
                        tracing::warn!(error = %e, "projector cannot read the store");
                        if !self.still_leading(conn, &mut backoff, shutdown).await {
                            return Stepped::LostLeadership;
                        }
                        continue 'resume;
                    }
                };
                match apply_batch(conn, self.projection.as_ref(), &name, &batch).await {
                    Ok(position) => {
                        backoff = Backoff::default();
                        tracing::debug!(position, events = batch.len(), "projector applied");
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "projector batch rolled back; retrying"
                        );
                        if !self.still_leading(conn, &mut backoff, shutdown).await {
                            return Stepped::LostLeadership;
                        }
                        continue 'resume;
                    }
                }
            }
        }
    }

    /// After a failure: waits out the backoff and reports whether the lock connection still
    /// works (a broken one means the lock is gone).
    async fn still_leading(
        &self,
        conn: &mut PgConnection,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> bool {
        backoff.wait(shutdown).await;
        sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok()
    }
}

/// Retry delays: 100 ms doubling up to 5 s.
pub(crate) struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(BACKOFF_START)
    }
}

impl Backoff {
    pub(crate) async fn wait(&mut self, shutdown: &CancellationToken) {
        sleep_or_cancel(self.0, shutdown).await;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
    }
}
