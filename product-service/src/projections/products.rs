//! The `products` read model: one row per product, with the stream version it reflects.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use event_store::projection::Projection;
use event_store::RecordedEvent;
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::events::ProductEvent;

/// The projection's name, and so its checkpoint `projection:products`.
pub const NAME: &str = "products";

pub struct ProductsProjection;

impl Projection for ProductsProjection {
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

async fn apply(tx: &mut PgConnection, stored: &RecordedEvent) -> anyhow::Result<()> {
    let Some(event) = ProductEvent::from_stored(&stored.event_type, &stored.payload)
        .with_context(|| format!("decoding event {}", stored.event_id))?
    else {
        // Reservation streams and event types added later are not part of this model.
        return Ok(());
    };
    let version = stored.stream_version;
    let at = stored.recorded_at;
    // Every update is guarded by `version < $version`, so applying an event twice (a rebuild
    // racing a late batch, say) cannot count stock twice.
    let query = match &event {
        ProductEvent::ProductCreated(e) => sqlx::query(
            "INSERT INTO products \
                 (id, name, price_cents, stock_available, stock_reserved, version, updated_at) \
             VALUES ($1, $2, $3, $4, 0, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 price_cents = excluded.price_cents, stock_available = excluded.stock_available, \
                 stock_reserved = 0, version = excluded.version, updated_at = excluded.updated_at \
             WHERE products.version < excluded.version",
        )
        .bind(e.product_id)
        .bind(&e.name)
        .bind(e.price_cents)
        .bind(e.initial_stock),
        ProductEvent::PriceChanged(e) => sqlx::query(
            "UPDATE products SET price_cents = $2, version = $3, updated_at = $4 \
             WHERE id = $1 AND version < $3",
        )
        .bind(e.product_id)
        .bind(e.price_cents),
        ProductEvent::ProductRestocked(e) => sqlx::query(
            "UPDATE products SET stock_available = stock_available + $2, version = $3, \
                 updated_at = $4 \
             WHERE id = $1 AND version < $3",
        )
        .bind(e.product_id)
        .bind(e.quantity),
        ProductEvent::StockReserved(e) => sqlx::query(
            "UPDATE products SET stock_available = stock_available - $2, \
                 stock_reserved = stock_reserved + $2, version = $3, updated_at = $4 \
             WHERE id = $1 AND version < $3",
        )
        .bind(e.product_id)
        .bind(e.quantity),
        ProductEvent::StockReleased(e) => sqlx::query(
            "UPDATE products SET stock_available = stock_available + $2, \
                 stock_reserved = stock_reserved - $2, version = $3, updated_at = $4 \
             WHERE id = $1 AND version < $3",
        )
        .bind(e.product_id)
        .bind(e.quantity),
    };
    query
        .bind(version)
        .bind(at)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("applying {} to products", stored.event_type))?;
    Ok(())
}

/// One row of the read model.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProductRow {
    pub id: Uuid,
    pub name: String,
    pub price_cents: i64,
    pub stock_available: i64,
    pub stock_reserved: i64,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, price_cents, stock_available, stock_reserved, version, updated_at";

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
