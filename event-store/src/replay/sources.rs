//! Building the shadow from each source (the store's own events, the inbox's foreign events)
//! and swapping it in against that source's live writer.

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::mpsc;

use super::{limit_lock_waits, shadow, Phase, RebuildError, Run};
use crate::consumer::{ForeignEvent, Reaction};
use crate::projection::{checkpoint_name, Projection};
use crate::{checkpoint, inbox, locks, RecordedEvent};

impl Run<'_> {
    /// Applies pages of `read_all` after `from` to the shadow until a page comes back short
    /// (the head is near); returns the position of the last event applied.
    pub(super) async fn build_from_store(
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
    pub(super) async fn swap_store(
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
        shadow::swap(&mut tx, &self.live_schema, self.target.tables()).await?;
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
    pub(super) async fn swap_inline(
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
        shadow::swap(&mut tx, &self.live_schema, self.target.tables()).await?;
        tx.commit().await?;
        self.advance(read, Phase::Swapping);
        Ok(after)
    }

    /// Applies inbox rows after `from` below successive horizons until few remain; returns
    /// the `seq` of the last row applied.
    pub(super) async fn build_from_inbox(
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
    pub(super) async fn swap_inbox(
        &mut self,
        handler: &dyn Reaction,
        conn: &mut PgConnection,
        mut after: i64,
    ) -> Result<i64, RebuildError> {
        let mut tx = conn.begin().await?;
        limit_lock_waits(&mut tx).await?;
        locks::lock_inbox_exclusive(&mut tx).await?;
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
        shadow::swap(&mut tx, &self.live_schema, self.target.tables()).await?;
        tx.commit().await?;
        self.advance(read, Phase::Swapping);
        Ok(after)
    }
}

/// Runs the page reader as a task of its own, so that decoding the next page (client CPU)
/// overlaps applying this one, and waits for both. Memory stays at the page in hand plus the
/// one in the channel plus the one being read.
pub(super) async fn pipeline<R, A>(reader: R, applier: A) -> Result<(), RebuildError>
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
pub(super) async fn apply_inbox_page(
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
pub(super) async fn inbox_horizon(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    locks::lock_inbox_exclusive(&mut tx).await?;
    let horizon: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM inbox")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(horizon)
}
