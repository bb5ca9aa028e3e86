//! Rebuilding order-service's projections from what its own database holds (see
//! `event_store::replay`): `orders` from this service's events in the store, `catalog` from
//! product-service's events in the inbox, never from what JetStream still retains.

use std::sync::Arc;

use event_store::replay::{Options, Target};
use event_store::EventStore;
use service_kit::replay_cli as cli;

use crate::config::{Config, ReplayArgs};
use crate::db;
use crate::projections::catalog::{self, CatalogProjection};
use crate::projections::orders::{self, OrdersProjection};

/// Every projection of this service that can be rebuilt, with the tables it writes.
pub fn targets() -> Vec<Target> {
    debug_assert_eq!(orders::NAME, "orders");
    debug_assert_eq!(catalog::NAME, "catalog");
    vec![
        Target::inline(Arc::new(OrdersProjection), &["orders"]),
        Target::inbox(Arc::new(CatalogProjection), &["catalog_products"]),
    ]
}

/// `order-service replay`: rebuilds against DATABASE_URL (NATS is not needed), beside a
/// running service or not.
pub async fn run(config: &Config, args: &ReplayArgs) -> anyhow::Result<()> {
    let targets = targets();
    if args.list {
        cli::list(&targets);
        return Ok(());
    }
    let pool = db::connect(&config.database_url, 4).await?;
    db::migrate(&pool).await?;
    let store = EventStore::new(pool.clone());
    let options = Options {
        page_size: args.page_size,
    };
    let result = cli::run(&store, &targets, &args.projections, &options).await;
    pool.close().await;
    result
}
