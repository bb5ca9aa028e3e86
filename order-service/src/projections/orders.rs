//! The orders read model: one row per order stream, the fold of `domain::order::evolve`, with
//! `version` = the stream version of the last event applied. Run by the store's `Projector`,
//! which commits each batch together with the checkpoint; the version guard additionally makes
//! an event that is applied twice (a rebuild over live rows) a no-op.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, Utc};
use event_store::projection::Projection;
use event_store::RecordedEvent;
use futures::future::BoxFuture;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::events::{OrderEvent, OrderLine};
use crate::domain::order::{self, OrderState, OrderStatus};

/// Name of the projection; its checkpoint is `projection:orders`.
pub const NAME: &str = "orders";

/// A row of `orders`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub customer_id: String,
    pub status: String,
    pub lines: Json<Vec<OrderLine>>,
    pub total_cents: i64,
    pub rejection_reason: Option<String>,
    pub version: i64,
    pub placed_at: DateTime<Utc>,
}

impl OrderRow {
    /// The status as the domain names it; the table's CHECK admits no other value.
    pub fn status(&self) -> anyhow::Result<OrderStatus> {
        serde_json::from_value(serde_json::Value::String(self.status.clone())).with_context(|| {
            format!(
                "order {} has unknown status {:?}",
                self.order_id, self.status
            )
        })
    }

    fn state(&self) -> anyhow::Result<OrderState> {
        Ok(OrderState {
            order_id: self.order_id,
            status: Some(self.status()?),
            customer_id: self.customer_id.clone(),
            lines: self.lines.0.clone(),
            total_cents: self.total_cents,
            rejection_reason: self.rejection_reason.clone(),
        })
    }
}

const COLUMNS: &str =
    "order_id, customer_id, status, lines, total_cents, rejection_reason, version, placed_at";

pub struct OrdersProjection;

impl Projection for OrdersProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(apply(tx, event))
    }

    fn apply_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(apply_batch(tx, events))
    }
}

/// Applies one of this service's events to its order's row.
pub async fn apply(conn: &mut PgConnection, recorded: &RecordedEvent) -> anyhow::Result<()> {
    let Some(event) = decode(recorded)? else {
        return Ok(());
    };
    let current: Option<OrderRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM orders WHERE order_id = $1 FOR UPDATE"
    ))
    .bind(event.order_id())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = next_row(current.as_ref(), &event, recorded)? {
        upsert(conn, vec![row]).await?;
    }
    Ok(())
}

/// Applies a page of events with one read and one write: the rows the page continues are
/// loaded, every event folded in memory with [`next_row`] (exactly as [`apply`] does one by
/// one), and the changed rows written back in one statement. A rebuild applies its pages so.
pub async fn apply_batch(conn: &mut PgConnection, events: &[RecordedEvent]) -> anyhow::Result<()> {
    let mut decoded = Vec::with_capacity(events.len());
    for recorded in events {
        if let Some(event) = decode(recorded)? {
            decoded.push((event, recorded));
        }
    }
    // An order whose first event here is its OrderPlaced folds from nothing, so its row is
    // not read: if it is stored already, the version-guarded write leaves it unless this page
    // takes it further, and then the fold from the stream's start is the right row.
    let mut first_seen = HashSet::new();
    let ids: Vec<Uuid> = decoded
        .iter()
        .filter(|(event, recorded)| {
            first_seen.insert(event.order_id()) && !starts_stream(event, recorded)
        })
        .map(|(event, _)| event.order_id())
        .collect();
    // No FOR UPDATE: one writer applies a page at a time (a rebuild's shadow tables have one
    // writer; a projector's batches are serialised by its checkpoint row), and row locks
    // would cost a heap write per row.
    let loaded: Vec<OrderRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM orders WHERE order_id = ANY($1)"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut rows: HashMap<Uuid, OrderRow> = loaded.into_iter().map(|r| (r.order_id, r)).collect();
    // First-touch order, so the write is deterministic.
    let mut changed: Vec<Uuid> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for (event, recorded) in &decoded {
        let id = event.order_id();
        if let Some(row) = next_row(rows.get(&id), event, recorded)? {
            if seen.insert(id) {
                changed.push(id);
            }
            rows.insert(id, row);
        }
    }
    let changed: Vec<OrderRow> = changed.iter().filter_map(|id| rows.remove(id)).collect();
    if !changed.is_empty() {
        upsert(conn, changed).await?;
    }
    Ok(())
}

fn starts_stream(event: &OrderEvent, recorded: &RecordedEvent) -> bool {
    matches!(event, OrderEvent::OrderPlaced(_)) && recorded.stream_version == 1
}

fn decode(recorded: &RecordedEvent) -> anyhow::Result<Option<OrderEvent>> {
    OrderEvent::from_stored(&recorded.event_type, &recorded.payload).with_context(|| {
        format!(
            "{} version {} ({}) does not decode",
            recorded.stream_id, recorded.stream_version, recorded.event_type
        )
    })
}

/// The row `event` makes of `current`, or `None` when the row already includes it (its
/// version is at or past the event's): applying an event twice changes nothing.
fn next_row(
    current: Option<&OrderRow>,
    event: &OrderEvent,
    recorded: &RecordedEvent,
) -> anyhow::Result<Option<OrderRow>> {
    let (state, placed_at) = match (current, event) {
        (Some(row), _) if row.version >= recorded.stream_version => return Ok(None),
        (Some(row), _) => (row.state()?, row.placed_at),
        (None, OrderEvent::OrderPlaced(_)) => (OrderState::default(), recorded.recorded_at),
        (None, _) => {
            // Streams start with OrderPlaced, so this is a bug elsewhere; applying the event
            // would invent an order without customer or lines.
            anyhow::bail!(
                "{} has no OrderPlaced before {}",
                recorded.stream_id,
                recorded.event_type
            )
        }
    };
    let state = order::evolve(state, event);
    let status = state.status.unwrap_or(OrderStatus::Pending);
    Ok(Some(OrderRow {
        order_id: event.order_id(),
        customer_id: state.customer_id,
        status: status.as_str().to_owned(),
        lines: Json(state.lines),
        total_cents: state.total_cents,
        rejection_reason: state.rejection_reason,
        version: recorded.stream_version,
        placed_at,
    }))
}

/// Inserts rows, or replaces rows of a lower version (at most one row per order).
/// `placed_at` is never changed once set.
async fn upsert(conn: &mut PgConnection, rows: Vec<OrderRow>) -> Result<(), sqlx::Error> {
    let n = rows.len();
    let (mut ids, mut customers, mut statuses, mut lines) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut totals, mut reasons, mut versions, mut placed) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for row in rows {
        ids.push(row.order_id);
        customers.push(row.customer_id);
        statuses.push(row.status);
        lines.push(row.lines);
        totals.push(row.total_cents);
        reasons.push(row.rejection_reason);
        versions.push(row.version);
        placed.push(row.placed_at);
    }
    sqlx::query(
        "INSERT INTO orders (order_id, customer_id, status, lines, total_cents, \
                             rejection_reason, version, placed_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::int8[], \
                              $6::text[], $7::int8[], $8::timestamptz[]) \
         ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, \
             status = excluded.status, lines = excluded.lines, \
             total_cents = excluded.total_cents, rejection_reason = excluded.rejection_reason, \
             version = excluded.version \
         WHERE orders.version < excluded.version",
    )
    .bind(ids)
    .bind(customers)
    .bind(statuses)
    .bind(lines)
    .bind(totals)
    .bind(reasons)
    .bind(versions)
    .bind(placed)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One order.
pub async fn find<'e>(
    db: impl PgExecutor<'e>,
    order_id: Uuid,
) -> Result<Option<OrderRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE order_id = $1"))
        .bind(order_id)
        .fetch_optional(db)
        .await
}

/// Up to `limit` orders, newest first, of one customer or of all.
pub async fn list<'e>(
    db: impl PgExecutor<'e>,
    customer_id: Option<&str>,
    limit: i64,
) -> Result<Vec<OrderRow>, sqlx::Error> {
    // Two statements rather than `$1 IS NULL OR ..`, so each can use its index.
    let order = "ORDER BY placed_at DESC, order_id DESC";
    match customer_id {
        Some(customer_id) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM orders WHERE customer_id = $1 {order} LIMIT $2"
            ))
            .bind(customer_id)
            .bind(limit)
            .fetch_all(db)
            .await
        }
        None => {
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders {order} LIMIT $1"))
                .bind(limit)
                .fetch_all(db)
                .await
        }
    }
}
