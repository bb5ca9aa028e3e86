//! Rebuilding product-service's projections from its own events (see `event_store::replay`).

use std::sync::Arc;

use anyhow::Context as _;
use event_store::replay::{Options, Target};
use event_store::{pool, EventStore};
use service_kit::replay_cli as cli;

use crate::config::{Config, ReplayArgs};
use crate::projections::products::ProductsProjection;

/// Every projection of this service that can be rebuilt, with the tables it writes.
pub fn targets() -> Vec<Target> {
    vec![Target::inline(Arc::new(ProductsProjection), &["products"])]
}

/// `product-service replay`: rebuilds against DATABASE_URL (NATS is not needed), beside a
/// running service or not.
pub async fn run(config: &Config, args: &ReplayArgs) -> anyhow::Result<()> {
    let targets = targets();
    if args.list {
        cli::list(&targets);
        return Ok(());
    }
    let pool = pool::connect_lazy(&config.database_url, 4).context("DATABASE_URL")?;
    let store = EventStore::new(pool.clone());
    store
        .migrate()
        .await
        .context("running the event store's migrations")?;
    crate::app::migrate(&pool).await?;
    let options = Options {
        page_size: args.page_size,
    };
    let result = cli::run(&store, &targets, &args.projections, &options).await;
    pool.close().await;
    result
}
