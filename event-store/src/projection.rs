//! Projections of a service's own events: read models kept in the service's database.
//!
//! A [`Projector`] tails the store from the projection's checkpoint and applies a batch of
//! events and the new checkpoint in ONE transaction, so a crash never half-applies and a
//! replayed event is skipped. One projector per projection runs at a time across replicas
//! (the [`leader`](crate::leader) election, keyed by the projection's checkpoint name).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::leader::{Leadership, Work};
use crate::{checkpoint, EventStore, RecordedEvent};

/// A read model built from the service's own events.
pub trait Projection: Send + Sync + 'static {
    /// Stable name; the checkpoint is stored as `projection:<name>`.
    fn name(&self) -> &str;

    /// The tables it writes, which a rebuild ([`crate::replay`]) builds afresh beside the live
    /// ones and swaps in. A projection that can be rebuilt names them; none by default.
    fn tables(&self) -> &[&str] {
        &[]
    }

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
    /// and one write per page instead of per event); the live projector hands over each
    /// batch it applies the same way.
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

/// Applies the events of `batch` the checkpoint has not passed, and advances it, in one
/// transaction. Returns the checkpoint afterwards.
///
/// The events go to [`Projection::apply_batch`] together, so a set-based projection writes
/// once per batch. The commit does not wait for its WAL flush (`synchronous_commit = off`):
/// the rows and the checkpoint commit together, so a batch a crash takes back is simply
/// applied again from the checkpoint it did not advance.
pub(crate) async fn apply_batch(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    name: &str,
    batch: &[RecordedEvent],
) -> anyhow::Result<i64> {
    let mut tx = conn
        .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
        .await
        .context("beginning a transaction")?;
    let stored = checkpoint::lock(&mut tx, name)
        .await
        .context("locking the checkpoint")?;
    // The batch is in position order.
    let fresh = &batch[batch.partition_point(|e| e.position <= stored)..];
    let Some(last) = fresh.last().map(|e| e.position) else {
        return Ok(stored);
    };
    projection.apply_batch(&mut tx, fresh).await?;
    checkpoint::save(&mut *tx, name, last)
        .await
        .context("saving the checkpoint")?;
    tx.commit().await.context("committing")?;
    Ok(last)
}

/// How long a projector lets appends gather before it reads them (see [`Projector::with_pace`]).
pub const PACE: Duration = Duration::from_millis(50);

pub struct Projector {
    store: EventStore,
    projection: Arc<dyn Projection>,
    batch_size: i64,
    pace: Duration,
}

impl Projector {
    pub fn new(store: EventStore, projection: Arc<dyn Projection>) -> Self {
        Projector {
            store,
            projection,
            batch_size: 500,
            pace: PACE,
        }
    }

    /// The least time between two reads of the store while the projector keeps up ([`PACE`]
    /// by default): each batch costs a transaction of five round trips whatever its size, so
    /// under a steady stream of appends the projector applies what `pace` gathered at once
    /// instead of an event or two per batch. The read model lags by up to `pace` more. Zero
    /// applies as soon as woken.
    pub fn with_pace(mut self, pace: Duration) -> Self {
        self.pace = pace;
        self
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
        let mut work = Applying {
            projection: self.projection.as_ref(),
            checkpoint: checkpoint_name(self.projection.name()),
            pace: self.pace,
        };
        let role = work.checkpoint.clone();
        Leadership::lead(&self.store, &role, self.batch_size, &mut work, &shutdown).await;
        tracing::info!("projector stopped");
    }
}

/// A projector's leading: applies each batch and its checkpoint in one transaction on the
/// lock connection itself, so every commit is made by the session that holds the lock: if that
/// connection breaks, nothing more is committed.
struct Applying<'p> {
    projection: &'p dyn Projection,
    /// The projection's checkpoint name, also its leadership role.
    checkpoint: String,
    pace: Duration,
}

impl Work for Applying<'_> {
    fn pace(&self) -> Duration {
        self.pace
    }

    async fn start(&mut self, conn: &mut PgConnection) -> anyhow::Result<i64> {
        let start = checkpoint::load(&mut *conn, &self.checkpoint)
            .await
            .context("loading the projector's checkpoint")?;
        tracing::debug!(position = start, "projector tailing");
        Ok(start)
    }

    async fn handle(
        &mut self,
        conn: &mut PgConnection,
        batch: &[RecordedEvent],
    ) -> anyhow::Result<()> {
        let position = apply_batch(conn, self.projection, &self.checkpoint, batch)
            .await
            .context("projector batch rolled back")?;
        tracing::debug!(position, events = batch.len(), "projector applied");
        Ok(())
    }
}
