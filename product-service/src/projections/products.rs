//! The `products` read model: one row per product, with the stream version it reflects.
//!
//! Applied inline: the store runs it in every transaction that appends to a product stream
//! (`EventStore::with_inline`), so `POST /products` and the reads after it agree at once.
//! Applying a batch is `event_store::read_model`'s; `version` makes an event applied twice (a
//! rebuild over live rows) a no-op.

use chrono::{DateTime, Utc};
use event_store::read_model::{RowModel, StateRow};
use event_store::RecordedEvent;
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::events::ProductEvent;
use crate::domain::product::{Product, ProductState};

/// The projection's name, and the name under which it is rebuilt.
pub const NAME: &str = "products";

pub struct ProductsProjection;

impl RowModel for ProductsProjection {
    const NAME: &'static str = NAME;
    const TABLES: &'static [&'static str] = &["products"];
    type Event = ProductEvent;
    type Recorded = RecordedEvent;
    type Row = ProductRow;

    fn key(event: &ProductEvent) -> Option<Uuid> {
        Some(event.product_id())
    }

    fn row_key(row: &ProductRow) -> Uuid {
        row.id
    }

    fn starts_stream(event: &ProductEvent, recorded: &RecordedEvent) -> bool {
        matches!(event, ProductEvent::ProductCreated(_)) && recorded.stream_version == 1
    }

    fn next_row(
        current: Option<&ProductRow>,
        event: &ProductEvent,
        recorded: &RecordedEvent,
    ) -> anyhow::Result<Option<ProductRow>> {
        Ok(next_row(
            current,
            event,
            recorded.stream_version,
            recorded.recorded_at,
        ))
    }

    fn load<'a>(
        conn: &'a mut PgConnection,
        keys: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<ProductRow>, sqlx::Error>> {
        Box::pin(async move {
            let sql = format!("SELECT {COLUMNS} FROM products WHERE id = ANY($1)");
            sqlx::query_as(&sql).bind(keys).fetch_all(conn).await
        })
    }

    fn upsert(
        conn: &mut PgConnection,
        rows: Vec<ProductRow>,
    ) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        Box::pin(upsert(conn, rows))
    }
}

impl StateRow<Product> for ProductsProjection {
    fn state_row(id: Uuid, state: &ProductState, version: i64) -> serde_json::Value {
        // `updated_at` is the statement's `now()`: the events' `recorded_at`.
        serde_json::json!({
            "id": id,
            "name": state.name,
            "price_cents": state.price_cents,
            "currency": state.currency,
            "stock_available": state.stock_available,
            "stock_reserved": state.stock_reserved,
            "version": version,
        })
    }

    const UPSERT: &'static str = "\
INSERT INTO products (id, name, price_cents, currency, stock_available, stock_reserved, version,
                      updated_at)
SELECT r.id, r.name, r.price_cents, r.currency, r.stock_available, r.stock_reserved, r.version,
       now()
FROM {input}, jsonb_populate_record(NULL::products, {input}.data) AS r
ON CONFLICT (id) DO UPDATE SET name = excluded.name, price_cents = excluded.price_cents,
    currency = excluded.currency, stock_available = excluded.stock_available,
    stock_reserved = excluded.stock_reserved, version = excluded.version,
    updated_at = excluded.updated_at
WHERE products.version < excluded.version";
}

/// The row `event` (at stream `version`, recorded `at`) makes of `current`, or `None` when
/// it changes nothing: the row already includes it, or there is no row to change (events
/// of a product come after its `ProductCreated`).
pub fn next_row(
    current: Option<&ProductRow>,
    event: &ProductEvent,
    version: i64,
    at: DateTime<Utc>,
) -> Option<ProductRow> {
    if current.is_some_and(|row| row.version >= version) {
        return None;
    }
    let mut row = match (event, current) {
        (ProductEvent::ProductCreated(e), _) => ProductRow {
            id: e.product_id,
            name: e.name.clone(),
            price_cents: e.price.amount_minor,
            currency: e.price.currency.clone(),
            stock_available: e.initial_stock,
            stock_reserved: 0,
            version,
            updated_at: at,
        },
        (_, None) => return None,
        (_, Some(row)) => row.clone(),
    };
    match event {
        ProductEvent::ProductCreated(_) => {}
        ProductEvent::PriceChanged(e) => row.price_cents = e.price.amount_minor,
        // Events are facts: arithmetic saturates, as the aggregate's does, rather than panic.
        ProductEvent::ProductRestocked(e) => {
            row.stock_available = row.stock_available.saturating_add(e.quantity);
        }
        ProductEvent::StockReserved(e) => {
            row.stock_available = row.stock_available.saturating_sub(e.quantity);
            row.stock_reserved = row.stock_reserved.saturating_add(e.quantity);
        }
        ProductEvent::StockReleased(e) => {
            row.stock_available = row.stock_available.saturating_add(e.quantity);
            row.stock_reserved = row.stock_reserved.saturating_sub(e.quantity);
        }
    }
    row.version = version;
    row.updated_at = at;
    Some(row)
}

/// Inserts rows, or replaces rows of a lower version.
async fn upsert(tx: &mut PgConnection, rows: Vec<ProductRow>) -> Result<(), sqlx::Error> {
    let n = rows.len();
    let (mut ids, mut names, mut prices, mut available, mut reserved, mut versions, mut at) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut currencies = Vec::with_capacity(n);
    for row in rows {
        ids.push(row.id);
        names.push(row.name);
        prices.push(row.price_cents);
        currencies.push(row.currency);
        available.push(row.stock_available);
        reserved.push(row.stock_reserved);
        versions.push(row.version);
        at.push(row.updated_at);
    }
    sqlx::query(
        "INSERT INTO products \
             (id, name, price_cents, stock_available, stock_reserved, version, updated_at, \
              currency) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::int8[], \
                              $6::int8[], $7::timestamptz[], $8::text[]) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
             price_cents = excluded.price_cents, currency = excluded.currency, stock_available = excluded.stock_available, \
             stock_reserved = excluded.stock_reserved, version = excluded.version, \
             updated_at = excluded.updated_at \
         WHERE products.version < excluded.version",
    )
    .bind(ids)
    .bind(names)
    .bind(prices)
    .bind(available)
    .bind(reserved)
    .bind(versions)
    .bind(at)
    .bind(currencies)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One row of the read model.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProductRow {
    pub id: Uuid,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock_available: i64,
    pub stock_reserved: i64,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, name, price_cents, currency, stock_available, stock_reserved, version, updated_at";

pub async fn get<'e>(
    executor: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM products WHERE id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await
}

/// A page of products ordered by name, then id.
pub async fn list<'e>(
    executor: impl PgExecutor<'e>,
    limit: i64,
    offset: i64,
) -> Result<Vec<ProductRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM products ORDER BY name, id LIMIT $1 OFFSET $2"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(executor)
    .await
}
