//! `product_sales_daily`: the units of each product reserved and released per UTC day. Unlike
//! `products`, its rows are not one per stream (a day sums many orders' reservations), so it
//! is not written in the append's statement: a [`Projector`](event_store::projection::Projector)
//! keeps it from its own checkpoint, a moment behind the store, applying each batch of events
//! and the checkpoint in one transaction (exactly once, however often it is restarted).
//! Rebuilt from the store like the inline read models (`crate::replay`).

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::NaiveDate;
use event_store::projection::Projection;
use event_store::wire::WireEvent as _;
use event_store::RecordedEvent;
use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::events::ProductEvent;

/// The projection's name and its checkpoint's, and its table.
pub const NAME: &str = "product_sales_daily";

pub struct SalesProjection;

/// One product's day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
pub struct SalesDay {
    /// The UTC day the reservations were recorded on.
    #[schema(value_type = String, example = "2026-12-07")]
    pub day: NaiveDate,
    /// Units reserved for orders that day.
    pub reserved: i64,
    /// Units given back that day (cancelled orders).
    pub released: i64,
}

/// Units reserved and released per (product, day) in `events`; other events count nothing.
fn tally(events: &[RecordedEvent]) -> anyhow::Result<BTreeMap<(Uuid, NaiveDate), (i64, i64)>> {
    let mut days: BTreeMap<(Uuid, NaiveDate), (i64, i64)> = BTreeMap::new();
    for event in events {
        let decoded = ProductEvent::decode(event).with_context(|| {
            format!(
                "decoding version {} of {}",
                event.stream_version, event.stream_id
            )
        })?;
        let (product_id, reserved, released) = match decoded {
            Some(ProductEvent::StockReserved(e)) => (e.product_id, e.quantity, 0),
            Some(ProductEvent::StockReleased(e)) => (e.product_id, 0, e.quantity),
            _ => continue,
        };
        let day = days
            .entry((product_id, event.recorded_at.date_naive()))
            .or_default();
        day.0 += reserved;
        day.1 += released;
    }
    Ok(days)
}

impl Projection for SalesProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn tables(&self) -> &[&str] {
        &[NAME]
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        self.apply_batch(tx, std::slice::from_ref(event))
    }

    /// One upsert per batch, whatever its size: the batch's units summed per product and day
    /// first.
    fn apply_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let days = tally(events)?;
            if days.is_empty() {
                return Ok(());
            }
            let (mut products, mut dates, mut reserved, mut released) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for ((product, day), (r, l)) in days {
                products.push(product);
                dates.push(day);
                reserved.push(r);
                released.push(l);
            }
            sqlx::query(
                "INSERT INTO product_sales_daily (product_id, day, reserved, released) \
                 SELECT * FROM unnest($1::uuid[], $2::date[], $3::bigint[], $4::bigint[]) \
                 ON CONFLICT (product_id, day) DO UPDATE SET \
                   reserved = product_sales_daily.reserved + EXCLUDED.reserved, \
                   released = product_sales_daily.released + EXCLUDED.released",
            )
            .bind(products)
            .bind(dates)
            .bind(reserved)
            .bind(released)
            .execute(&mut *tx)
            .await
            .context("writing product_sales_daily")?;
            Ok(())
        })
    }
}

/// A product's most recent `days` days with sales, oldest first.
pub async fn of_product<'e>(
    db: impl PgExecutor<'e>,
    product_id: Uuid,
    days: i64,
) -> Result<Vec<SalesDay>, sqlx::Error> {
    sqlx::query_as(
        "SELECT day, reserved, released FROM ( \
           SELECT day, reserved, released FROM product_sales_daily \
           WHERE product_id = $1 ORDER BY day DESC LIMIT $2 \
         ) recent ORDER BY day",
    )
    .bind(product_id)
    .bind(days)
    .fetch_all(db)
    .await
}
