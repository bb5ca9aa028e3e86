//! Reads: by stream (on the pool or on a caller's transaction), several streams at once, and
//! in global position order without ever skipping an event that commits late.

use std::collections::HashMap;

use sqlx::{PgConnection, Row};

use super::EventStore;
use crate::{RecordedEvent, StoreError};

/// The lowest transaction id that may still commit events into this database's `events`, given
/// snapshot `s`: its `xmax`, or the oldest transaction in progress at the snapshot that is not
/// known to belong to another database, whichever is lower. Rows below
/// `(xid + xid_offset) << 20` are final (the offset of `position_epoch`, see the migration).
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

/// A page of `read_all`: the events that are safe to hand out, and whether committed events
/// beyond them are being held back until older transactions finish.
pub(crate) struct Page {
    pub events: Vec<RecordedEvent>,
    pub held_back: bool,
}

impl EventStore {
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
        // The page and the horizon in one statement, so both see the same snapshot. The
        // horizon is a transaction id; positions are drawn from ids plus the database's
        // offset (`position_epoch`, raised only after a move to another cluster), so the
        // offset is added before comparing. Asking `pg_stat_activity` costs a scan of every
        // backend, so it is asked only when the server's own horizon would hold back part of
        // the page.
        let sql = format!(
            "WITH snap AS MATERIALIZED (SELECT pg_current_snapshot() AS s, \
                                        (SELECT xid_offset FROM position_epoch) AS o), \
                  page AS MATERIALIZED (SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 \
                                        ORDER BY position LIMIT $2), \
                  horizon AS MATERIALIZED ( \
                      SELECT CASE WHEN NOT EXISTS ( \
                                      SELECT 1 FROM page \
                                      WHERE position >= \
                                            (pg_snapshot_xmin(s)::text::bigint + o) << 20) \
                                  THEN pg_snapshot_xmin(s)::text::bigint \
                                  ELSE {HORIZON_SQL} END + o AS xid \
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
