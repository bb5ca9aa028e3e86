//! The orders read model: one row per order stream, the fold of `domain::order::evolve`, with
//! `version` = the stream version of the last event applied. Updated inline, in the
//! transaction of every append to an order; applying a batch is `event_store::read_model`'s.

use anyhow::Context;
use chrono::{DateTime, Utc};
use event_store::read_model::{RowModel, StateRow};
use event_store::RecordedEvent;
use futures::future::BoxFuture;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::events::{Money, OrderEvent, OrderLine};
use crate::domain::order::{self, Order, OrderState, OrderStatus};

/// Name of the projection; its checkpoint is `projection:orders`.
pub const NAME: &str = "orders";

/// A line as `orders.lines` keeps it, and as the API shows it: the price in minor units of
/// the order's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PricedLine {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// A row of `orders`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub customer_id: String,
    pub status: String,
    pub lines: Json<Vec<PricedLine>>,
    pub total_cents: i64,
    /// The currency of the total and of every line.
    pub currency: String,
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
            lines: self.lines.iter().map(|l| self.line(l)).collect(),
            total: self.money(self.total_cents),
            rejection_reason: self.rejection_reason.clone(),
        })
    }
}

impl OrderRow {
    fn money(&self, amount_minor: i64) -> Money {
        Money {
            amount_minor,
            currency: self.currency.clone(),
        }
    }

    fn line(&self, line: &PricedLine) -> OrderLine {
        OrderLine {
            product_id: line.product_id,
            quantity: line.quantity,
            unit_price: self.money(line.unit_price_cents),
        }
    }
}

fn priced(line: &OrderLine) -> PricedLine {
    PricedLine {
        product_id: line.product_id,
        quantity: line.quantity,
        unit_price_cents: line.unit_price.amount_minor,
    }
}

const COLUMNS: &str = "order_id, customer_id, status, lines, total_cents, currency, \
     rejection_reason, version, placed_at";

pub struct OrdersProjection;

impl RowModel for OrdersProjection {
    const NAME: &'static str = NAME;
    const TABLES: &'static [&'static str] = &["orders"];
    type Event = OrderEvent;
    type Recorded = RecordedEvent;
    type Row = OrderRow;

    fn key(event: &OrderEvent) -> Option<Uuid> {
        Some(event.order_id())
    }

    fn row_key(row: &OrderRow) -> Uuid {
        row.order_id
    }

    fn starts_stream(event: &OrderEvent, recorded: &RecordedEvent) -> bool {
        matches!(event, OrderEvent::OrderPlaced(_)) && recorded.stream_version == 1
    }

    fn next_row(
        current: Option<&OrderRow>,
        event: &OrderEvent,
        recorded: &RecordedEvent,
    ) -> anyhow::Result<Option<OrderRow>> {
        next_row(current, event, recorded)
    }

    fn load<'a>(
        conn: &'a mut PgConnection,
        keys: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<OrderRow>, sqlx::Error>> {
        Box::pin(async move {
            let sql = format!("SELECT {COLUMNS} FROM orders WHERE order_id = ANY($1)");
            sqlx::query_as(&sql).bind(keys).fetch_all(conn).await
        })
    }

    fn upsert(
        conn: &mut PgConnection,
        rows: Vec<OrderRow>,
    ) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        Box::pin(upsert(conn, rows))
    }
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
    Ok(Some(row_of(
        event.order_id(),
        &state,
        recorded.stream_version,
        placed_at,
    )))
}

/// The row of order `order_id` as `state`, at stream `version`: what both the fold above and
/// a command's statement ([`StateRow`]) write.
fn row_of(order_id: Uuid, state: &OrderState, version: i64, placed_at: DateTime<Utc>) -> OrderRow {
    let status = state.status.unwrap_or(OrderStatus::Pending);
    OrderRow {
        order_id,
        customer_id: state.customer_id.clone(),
        status: status.as_str().to_owned(),
        lines: Json(state.lines.iter().map(priced).collect()),
        total_cents: state.total.amount_minor,
        currency: state.total.currency.clone(),
        rejection_reason: state.rejection_reason.clone(),
        version,
        placed_at,
    }
}

impl StateRow<Order> for OrdersProjection {
    fn state_row(order_id: Uuid, state: &OrderState, version: i64) -> serde_json::Value {
        // `placed_at` is the statement's `now()` on insert (the events' `recorded_at`);
        // the value here is never written.
        let row = row_of(order_id, state, version, DateTime::<Utc>::UNIX_EPOCH);
        // A row of strings, numbers and a list of them serializes.
        serde_json::to_value(row).unwrap_or_default()
    }

    const UPSERT: &'static str = "\
INSERT INTO orders (order_id, customer_id, status, lines, total_cents, currency, rejection_reason,
                    version, placed_at)
SELECT r.order_id, r.customer_id, r.status, r.lines, r.total_cents, r.currency,
       r.rejection_reason, r.version, now()
FROM {input}, jsonb_populate_record(NULL::orders, {input}.data) AS r
ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id,
    status = excluded.status, lines = excluded.lines, total_cents = excluded.total_cents,
    currency = excluded.currency, rejection_reason = excluded.rejection_reason,
    version = excluded.version
WHERE orders.version < excluded.version";
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
    let mut currencies = Vec::with_capacity(n);
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
        currencies.push(row.currency);
        reasons.push(row.rejection_reason);
        versions.push(row.version);
        placed.push(row.placed_at);
    }
    sqlx::query(
        "INSERT INTO orders (order_id, customer_id, status, lines, total_cents, \
                             rejection_reason, version, placed_at, currency) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::int8[], \
                              $6::text[], $7::int8[], $8::timestamptz[], $9::text[]) \
         ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, \
             status = excluded.status, lines = excluded.lines, \
             total_cents = excluded.total_cents, currency = excluded.currency, rejection_reason = excluded.rejection_reason, \
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
    .bind(currencies)
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
