//! The `products` read model: one row per product, with the stream version it reflects.
//!
//! Applied inline: the store runs it in every transaction that appends to a product stream
//! (`EventStore::with_inline`), so `POST /products` and the reads after it agree at once. A
//! batch of events is folded in memory onto the rows it continues and written back in one
//! statement; `version` makes an event applied twice (a rebuild over live rows) a no-op.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use event_store::projection::Projection;
use event_store::RecordedEvent;
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::events::ProductEvent;

/// The projection's name, and the name under which it is rebuilt.
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
        Box::pin(apply_batch(tx, std::slice::from_ref(event)))
    }

    fn apply_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(apply_batch(tx, events))
    }
}

/// Applies events in position order with one read and one write: the rows they continue are
/// loaded, every event folded with [`next_row`], and the changed rows written back at once.
async fn apply_batch(tx: &mut PgConnection, events: &[RecordedEvent]) -> anyhow::Result<()> {
    let mut decoded = Vec::with_capacity(events.len());
    for stored in events {
        // Reservation streams and event types added later are not part of this model.
        if let Some(event) = ProductEvent::from_stored(&stored.event_type, &stored.payload)
            .with_context(|| format!("decoding event {}", stored.event_id))?
        {
            decoded.push((event, stored));
        }
    }
    if decoded.is_empty() {
        return Ok(());
    }
    // A product whose first event here starts its stream folds from nothing.
    let mut first_seen = HashSet::new();
    let ids: Vec<Uuid> = decoded
        .iter()
        .filter(|(event, stored)| {
            first_seen.insert(event.product_id())
                && !(matches!(event, ProductEvent::ProductCreated(_)) && stored.stream_version == 1)
        })
        .map(|(event, _)| event.product_id())
        .collect();
    let loaded: Vec<ProductRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM products WHERE id = ANY($1)"
    ))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await
    .context("reading products")?;
    let mut rows: HashMap<Uuid, ProductRow> = loaded.into_iter().map(|r| (r.id, r)).collect();
    let mut changed: Vec<Uuid> = Vec::new();
    for (event, stored) in &decoded {
        let id = event.product_id();
        if let Some(row) = next_row(
            rows.get(&id),
            event,
            stored.stream_version,
            stored.recorded_at,
        ) {
            if !changed.contains(&id) {
                changed.push(id);
            }
            rows.insert(id, row);
        }
    }
    let changed: Vec<ProductRow> = changed.iter().filter_map(|id| rows.remove(id)).collect();
    upsert(tx, changed).await.context("writing products")
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
            price_cents: e.price_cents,
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
        ProductEvent::PriceChanged(e) => row.price_cents = e.price_cents,
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
    if rows.is_empty() {
        return Ok(());
    }
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
    for row in rows {
        ids.push(row.id);
        names.push(row.name);
        prices.push(row.price_cents);
        available.push(row.stock_available);
        reserved.push(row.stock_reserved);
        versions.push(row.version);
        at.push(row.updated_at);
    }
    sqlx::query(
        "INSERT INTO products \
             (id, name, price_cents, stock_available, stock_reserved, version, updated_at) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::int8[], \
                              $6::int8[], $7::timestamptz[]) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
             price_cents = excluded.price_cents, stock_available = excluded.stock_available, \
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
