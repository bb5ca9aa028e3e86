//! Ways for tests to drive and look into the store that services never need: a projection
//! caught up without leadership, and the inbox read in receipt order.

use crate::consumer::ForeignEvent;
use crate::projection::{apply_batch, checkpoint_name, Projection};
use crate::{checkpoint, inbox, EventStore};

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

/// Foreign events recorded after `after_seq`, in receipt order, with their `seq`.
pub async fn read_inbox<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<(i64, ForeignEvent)>, sqlx::Error> {
    inbox::read_inbox_range(executor, after_seq, i64::MAX, limit).await
}
