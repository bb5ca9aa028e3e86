//! The orders read model: one row per order stream, the fold of `domain::order::evolve`, with
//! `version` = the stream version of the last event applied. Run by the store's `Projector`,
//! which commits each batch together with the checkpoint; the version guard additionally makes
//! an event that is applied twice (a rebuild over live rows) a no-op.

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
}

/// Applies one of this service's events to its order's row.
pub async fn apply(conn: &mut PgConnection, recorded: &RecordedEvent) -> anyhow::Result<()> {
    let Some(event) = OrderEvent::from_stored(&recorded.event_type, &recorded.payload)
        .with_context(|| {
            format!(
                "{} version {} ({}) does not decode",
                recorded.stream_id, recorded.stream_version, recorded.event_type
            )
        })?
    else {
        return Ok(());
    };
    let order_id = event.order_id();
    let current: Option<OrderRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM orders WHERE order_id = $1 FOR UPDATE"
    ))
    .bind(order_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (state, placed_at) = match (&current, &event) {
        (Some(row), _) if row.version >= recorded.stream_version => return Ok(()),
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
    let state = order::evolve(state, &event);
    let status = state.status.unwrap_or(OrderStatus::Pending);
    sqlx::query(
        "INSERT INTO orders (order_id, customer_id, status, lines, total_cents, \
                             rejection_reason, version, placed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, \
             status = excluded.status, lines = excluded.lines, \
             total_cents = excluded.total_cents, rejection_reason = excluded.rejection_reason, \
             version = excluded.version",
    )
    .bind(order_id)
    .bind(&state.customer_id)
    .bind(status.as_str())
    .bind(Json(&state.lines))
    .bind(state.total_cents)
    .bind(&state.rejection_reason)
    .bind(recorded.stream_version)
    .bind(placed_at)
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
