//! Wiring: what product-service adds to the shared skeleton (`service_kit::service`).
//!
//! - inline: the `products` read model, written in the transaction of every append to a
//!   product, whether a command or the saga appended;
//! - a projector: `product_sales_daily`, kept from its own checkpoint;
//! - the consumer of order-service's events: the stock reservation saga;
//! - replay: `products` and `product_sales_daily` from the store (`crate::replay`);
//! - the HTTP routes of `crate::api`, and the AsyncAPI document they serve.

use std::sync::Arc;

use actix_web::web;
use event_store::aggregate::Commands;
use event_store::EventStore;
use service_kit::service::{Service, Start};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::domain::product::Product;
use crate::projections::products::ProductsProjection;
use crate::projections::sales::SalesProjection;
use crate::reactions::StockReservation;
use crate::replay;

pub use service_kit::service::Application;

/// The service's own migrations (after the event store's).
pub fn migrations() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}

/// The executor of commands on products, writing the `products` row with each append
/// (`service_kit::service::commands`).
pub fn commands(store: EventStore) -> Commands<Product> {
    service_kit::service::commands::<Product, ProductsProjection>(store)
}

/// Runs the event store's migrations, then the service's.
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    service_kit::database::migrate(pool, migrations()).await
}

/// Prepares the database, connects NATS (in the background: HTTP comes up and takes writes
/// while NATS is down), starts the projector, the relay, the consumer and the notifier, and
/// binds the HTTP
/// listener (`port 0` picks a free port).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let asyncapi = web::Data::new(api::asyncapi::document(&config)?);
    let service = Service::start(Start {
        config: &config,
        migrations: migrations(),
        inline: vec![Arc::new(ProductsProjection)],
    })
    .await?;
    let store = service.store().clone();
    service.run_projectors(vec![Arc::new(SalesProjection)]);
    service.run_messaging(vec![Arc::new(StockReservation::new(store.clone()))]);
    let state = web::Data::new(AppState {
        pool: service.pool().clone(),
        store: store.clone(),
        commands: commands(store),
    });
    service
        .serve(replay::targets(), move |cfg| {
            cfg.app_data(state.clone()).app_data(asyncapi.clone());
            api::configure(cfg);
        })
        .await
}
