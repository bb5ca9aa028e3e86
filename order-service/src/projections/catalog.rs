//! The local catalogue: product-service's products as order-service needs them to price orders.
//!
//! A projection of foreign events, so it runs as a consumer handler ([`Reaction`]) inside the
//! consumer's transaction, beside the inbox entries of the events. Each row is
//! `domain::catalog::evolve` folded over the product's stream; `version` is the stream version
//! of the last event applied, which makes a repeated or older event a no-op. It is a
//! [`RowModel`] of foreign events: a batch is folded in memory onto the rows it continues by
//! the fold every row read model shares ([`RowBatch`]), and written back in one statement
//! ([`apply_batch`]): in the consumer, the rows are left with its recording ([`ROWS`]), and
//! the statement that writes the batch's inbox rows writes them too (the reservation
//! outcome's, when it appends; the consumer's own otherwise). A rebuild replays the same
//! events from the inbox the same way and writes the rows itself.

use std::collections::HashMap;

use event_store::consumer::{BatchReaction, ForeignEvent, HandleError, Reads, Recording};
use event_store::read_model::{load_rows, RowBatch, RowModel, RowUpsert};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::catalog::{self, CatalogEntry};
use crate::domain::product_events::ProductEvent;

/// Name of the catalogue handler (and of the projection in replay).
pub const NAME: &str = "catalog";

/// A row of `catalog_products`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize, serde::Serialize)]
pub struct CatalogRow {
    pub product_id: Uuid,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock_available: i64,
    pub available: bool,
    pub version: i64,
}

impl CatalogRow {
    fn from_entry(entry: CatalogEntry, version: i64) -> Self {
        CatalogRow {
            product_id: entry.product_id,
            name: entry.name,
            price_cents: entry.price_cents,
            currency: entry.currency,
            stock_available: entry.stock_available,
            available: entry.available,
            version,
        }
    }

    fn entry(self) -> CatalogEntry {
        CatalogEntry {
            product_id: self.product_id,
            name: self.name,
            price_cents: self.price_cents,
            currency: self.currency,
            stock_available: self.stock_available,
            available: self.available,
        }
    }
}

const COLUMNS: &str =
    "product_id, name, price_cents, currency, stock_available, available, version";

/// The consumer handler that keeps `catalog_products` up to date.
pub struct CatalogProjection;

impl BatchReaction for CatalogProjection {
    const NAME: &'static str = NAME;
    const TABLES: &'static [&'static str] = &[TABLE];

    /// Leaves the inbox rows to the consumer (or to the reservation outcome's statement).
    fn handle_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a ForeignEvent],
        recording: Option<&'a Recording<'a>>,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(apply_batch(tx, events, recording))
    }

    /// The rows the batch's fold continues, read with the inbox's answer in the consumer's
    /// one read of the batch.
    fn reads(&self, events: &[&ForeignEvent], reads: &mut Reads) {
        // A batch with an event that does not decode declares nothing; `apply_batch`
        // refuses it.
        if let Ok(batch) = RowBatch::<Self>::decode(events.iter().copied()) {
            reads.rows(TABLE, "product_id", batch.keys());
        }
    }
}

/// The table the catalogue is kept in.
const TABLE: &str = "catalog_products";

/// The catalogue as a row model of product-service's events: a product stream's row is
/// `catalog::evolve` folded over it; reservation streams keep no row.
impl RowModel for CatalogProjection {
    const NAME: &'static str = NAME;
    const TABLES: &'static [&'static str] = &[TABLE];
    type Event = ProductEvent;
    type Recorded = ForeignEvent;
    type Row = CatalogRow;

    fn key(event: &ProductEvent) -> Option<Uuid> {
        event.product_id()
    }

    fn row_key(row: &CatalogRow) -> Uuid {
        row.product_id
    }

    fn starts_stream(event: &ProductEvent, recorded: &ForeignEvent) -> bool {
        matches!(event, ProductEvent::ProductCreated(_)) && recorded.stream_version == 1
    }

    fn next_row(
        current: Option<&CatalogRow>,
        event: &ProductEvent,
        recorded: &ForeignEvent,
    ) -> anyhow::Result<Option<CatalogRow>> {
        if current.is_some_and(|row| row.version >= recorded.stream_version) {
            return Ok(None);
        }
        let entry = catalog::evolve(current.cloned().map(CatalogRow::entry), event);
        Ok(entry.map(|entry| CatalogRow::from_entry(entry, recorded.stream_version)))
    }

    fn load<'a>(
        conn: &'a mut PgConnection,
        keys: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<CatalogRow>, sqlx::Error>> {
        Box::pin(async move { Ok(find_many(conn, keys).await?.into_values().collect()) })
    }

    fn upsert(
        conn: &mut PgConnection,
        rows: Vec<CatalogRow>,
    ) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let rows = json_rows(rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            ROWS.write(conn, &rows).await
        })
    }
}

/// Applies product-service events (per product in stream order) to their products' rows:
/// the fold is the row model's ([`RowBatch`]), with one read (none, when the consumer's
/// read of the batch preloaded the rows) and one write (none of its own in the consumer's
/// `recording`: the rows are left with it, [`ROWS`]). Event types this service does not
/// know and events that are not about one product (reservations) change nothing.
pub async fn apply_batch(
    conn: &mut PgConnection,
    events: &[&ForeignEvent],
    recording: Option<&Recording<'_>>,
) -> Result<(), HandleError> {
    let batch = RowBatch::<CatalogProjection>::decode(events.iter().copied())
        .map_err(|(e, _)| HandleError::from(e))?;
    if batch.is_empty() {
        return Ok(());
    }
    let keys = batch.keys();
    // No row locks: the consumer records one product stream's events in one transaction at a
    // time (its per-stream locks), and a rebuild swaps under the inbox lock.
    let preloaded = recording.and_then(|r| r.preloaded().rows::<CatalogRow>(TABLE, &keys));
    let rows = match preloaded {
        Some(rows) => rows.map_err(|e| {
            HandleError::Transient(anyhow::Error::new(e).context("reading the catalogue's rows"))
        })?,
        None => load_rows::<CatalogProjection>(&mut *conn, &keys)
            .await
            .map_err(db_error)?,
    };
    // `next_row` fails on nothing: every event applies or changes nothing.
    let changed = batch
        .fold(rows)
        .map_err(|e| HandleError::Poison(format!("{e:#}")))?;
    match recording {
        Some(recording) => {
            let changed = json_rows(changed).map_err(|e| HandleError::Poison(e.to_string()))?;
            recording.defer(ROWS, changed);
            Ok(())
        }
        None => CatalogProjection::upsert(conn, changed)
            .await
            .map_err(db_error),
    }
}

/// Rows as [`ROWS`] reads them.
fn json_rows(rows: Vec<CatalogRow>) -> Result<Vec<serde_json::Value>, serde_json::Error> {
    rows.into_iter().map(serde_json::to_value).collect()
}

/// How the catalogue's rows are written: inserted, or replacing rows of a lower version.
pub const ROWS: RowUpsert = RowUpsert {
    name: NAME,
    sql: "\
INSERT INTO catalog_products (product_id, name, price_cents, currency, stock_available,
                              available, version)
SELECT r.product_id, r.name, r.price_cents, r.currency, r.stock_available, r.available,
       r.version
FROM {input}, jsonb_populate_record(NULL::catalog_products, {input}.data) AS r
ON CONFLICT (product_id) DO UPDATE SET name = excluded.name,
    price_cents = excluded.price_cents, currency = excluded.currency,
    stock_available = excluded.stock_available, available = excluded.available,
    version = excluded.version
WHERE catalog_products.version < excluded.version",
};

fn db_error(error: sqlx::Error) -> HandleError {
    HandleError::database(error, "writing the catalogue")
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

/// Every product of the catalogue (what the audit compares).
pub async fn all<'e>(db: impl PgExecutor<'e>) -> Result<Vec<CatalogRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM catalog_products ORDER BY product_id"
    ))
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
