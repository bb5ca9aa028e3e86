//! Positions that continue after the database moves to another Postgres cluster.
//!
//! Positions are `((xid + xid_offset) << 20) + ordinal` (see [`super::POSITION_BASE`]).
//! Transaction ids belong to a cluster: after pg_dump/pg_restore into another one (a backup
//! restored, a major-version upgrade, a switch to a logical replica) the server's ids start far
//! below the ones the stored events were written with. Every new event would then get a
//! position below the readers' checkpoints and never be handed out, silently. So when the store
//! is migrated, before the service serves or appends, [`EventStore::continue_positions`] raises
//! the offset until the next transaction's positions are above every stored one.

use sqlx::{Connection, Row};

use super::EventStore;

/// The offset raised by [`EventStore::continue_positions`]: the database was moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionsContinued {
    /// The offset before.
    pub previous_offset: i64,
    /// The offset now: new transactions draw positions from `(xid + offset) << 20`.
    pub offset: i64,
    /// The highest stored position, which every new position is above.
    pub head: i64,
}

/// Takes the lock first, in a statement of its own: `LOCK TABLE` takes no transaction id, so
/// the update below takes its snapshot and its transaction id only once no other replica can
/// be advancing the offset. Readers and appends (which only read the table) are not blocked.
const LOCK_SQL: &str = "LOCK TABLE position_epoch IN SHARE ROW EXCLUSIVE MODE";

/// The offset at which this transaction's positions would start just above the highest stored
/// one, if that is higher than the current offset. The transaction id is drawn after the
/// snapshot, so every transaction committed in the snapshot has a lower id, and every
/// transaction that starts later a higher one: once the offset is `max(position >> 20) + 1 -
/// xid`, all of them draw positions above every stored one. In normal operation the stored
/// positions were drawn with lower ids and the same offset, so nothing changes (and nothing is
/// written); a second replica starting right after the first finds the first's offset enough.
const ADVANCE_SQL: &str = "\
    UPDATE position_epoch AS p SET xid_offset = w.wanted, updated_at = now() \
    FROM (SELECT xid_offset AS previous, head, \
                 (head >> 20) + 1 - pg_current_xact_id()::text::bigint AS wanted \
          FROM position_epoch, \
               (SELECT max(position) AS head FROM events) AS h) AS w \
    WHERE w.wanted > p.xid_offset \
    RETURNING w.previous, p.xid_offset, w.head";

impl EventStore {
    /// Makes sure that positions drawn from now on are above every stored one, raising the
    /// database's position offset if it was moved to another cluster (whose transaction ids
    /// are lower). Idempotent and a no-op in normal operation; safe when several replicas
    /// start at once. Run by [`EventStore::migrate`], so before a service appends or reads.
    ///
    /// Every process that appends must have run it (or started after one that did) since
    /// the move: an append on a moved database that ran before it could draw a position
    /// below the stored ones.
    pub async fn continue_positions(&self) -> Result<Option<PositionsContinued>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(LOCK_SQL).execute(&mut *tx).await?;
        let row = sqlx::query(ADVANCE_SQL).fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let continued = PositionsContinued {
            previous_offset: row.try_get("previous")?,
            offset: row.try_get("xid_offset")?,
            head: row.try_get("head")?,
        };
        tracing::info!(
            head = continued.head,
            previous_offset = continued.previous_offset,
            xid_offset = continued.offset,
            "database moved: positions continue from {} (transaction id offset raised from {} \
             to {})",
            continued.head,
            continued.previous_offset,
            continued.offset
        );
        Ok(Some(continued))
    }
}
