//! The local catalogue: product-service's products as order-service needs them to price orders.
//!
//! A projection of foreign events, so it runs as a consumer handler ([`Reaction`]) inside the
//! consumer's transaction, beside the inbox entry of the event. Each row is
//! `domain::catalog::evolve` folded over the product's stream; `version` is the stream version
//! of the last event applied, which makes a repeated or older event a no-op. A rebuild replays
//! the same events from the inbox through [`apply`].

use std::collections::HashMap;

use event_store::consumer::{ForeignEvent, HandleError, Reaction};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::catalog::{self, CatalogEntry};
use crate::domain::product_events::ProductEvent;

/// Name of the catalogue handler (and of the projection in replay).
pub const NAME: &str = "catalog";

/// A row of `catalog_products`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CatalogRow {
    pub product_id: Uuid,
    pub name: String,
    pub price_cents: i64,
    pub stock_available: i64,
    pub available: bool,
    pub version: i64,
}

impl CatalogRow {
    fn entry(self) -> CatalogEntry {
        CatalogEntry {
            product_id: self.product_id,
            name: self.name,
            price_cents: self.price_cents,
            stock_available: self.stock_available,
            available: self.available,
        }
    }
}

const COLUMNS: &str = "product_id, name, price_cents, stock_available, available, version";

/// The consumer handler that keeps `catalog_products` up to date.
pub struct CatalogProjection;

impl Reaction for CatalogProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ForeignEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(apply(tx, event))
    }
}

/// Applies one product-service event to its product's row. Event types this service does not
/// know and events that are not about one product (reservations) change nothing.
#[tracing::instrument(skip_all, fields(event_id = %event.event_id, event_type = %event.event_type))]
pub async fn apply(conn: &mut PgConnection, event: &ForeignEvent) -> Result<(), HandleError> {
    let decoded = ProductEvent::from_stored(&event.event_type, &event.payload).map_err(|e| {
        HandleError::Poison(format!("{} payload does not decode: {e}", event.event_type))
    })?;
    let Some(decoded) = decoded else {
        return Ok(());
    };
    let Some(product_id) = decoded.product_id() else {
        return Ok(());
    };
    let current: Option<CatalogRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM catalog_products WHERE product_id = $1 FOR UPDATE"
    ))
    .bind(product_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    if current
        .as_ref()
        .is_some_and(|row| row.version >= event.stream_version)
    {
        return Ok(());
    }
    let Some(entry) = catalog::evolve(current.map(CatalogRow::entry), &decoded) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO catalog_products \
             (product_id, name, price_cents, stock_available, available, version) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (product_id) DO UPDATE SET name = excluded.name, \
             price_cents = excluded.price_cents, stock_available = excluded.stock_available, \
             available = excluded.available, version = excluded.version",
    )
    .bind(entry.product_id)
    .bind(&entry.name)
    .bind(entry.price_cents)
    .bind(entry.stock_available)
    .bind(entry.available)
    .bind(event.stream_version)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

fn db_error(error: sqlx::Error) -> HandleError {
    crate::reactions::database_error(error, "writing the catalogue")
}

/// One product of the catalogue.
pub async fn find<'e>(
    db: impl PgExecutor<'e>,
    product_id: Uuid,
) -> Result<Option<CatalogRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM catalog_products WHERE product_id = $1"
    ))
    .bind(product_id)
    .fetch_optional(db)
    .await
}

/// Up to `limit` products, by name.
pub async fn list<'e>(db: impl PgExecutor<'e>, limit: i64) -> Result<Vec<CatalogRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM catalog_products ORDER BY name, product_id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The catalogue rows of these products, by id; unknown ids are simply absent.
pub async fn find_many<'e>(
    db: impl PgExecutor<'e>,
    product_ids: &[Uuid],
) -> Result<HashMap<Uuid, CatalogRow>, sqlx::Error> {
    let rows: Vec<CatalogRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM catalog_products WHERE product_id = ANY($1)"
    ))
    .bind(product_ids)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.product_id, r)).collect())
}
