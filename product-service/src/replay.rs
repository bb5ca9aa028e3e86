//! Rebuilding product-service's projections from its own events (see `event_store::replay`).

use std::sync::Arc;

use event_store::replay::Target;

use crate::config::{Config, ReplayArgs};
use crate::projections::products::ProductsProjection;

/// Every projection of this service that can be rebuilt, with the tables it writes.
pub fn targets() -> Vec<Target> {
    vec![Target::inline(Arc::new(ProductsProjection), &["products"])]
}

/// `product-service replay`: rebuilds against DATABASE_URL (NATS is not needed), beside a
/// running service or not.
pub async fn run(config: &Config, args: &ReplayArgs) -> anyhow::Result<()> {
    let migrations = crate::app::migrations();
    service_kit::replay_cli::command(&config.database_url, migrations, &targets(), args).await
}
