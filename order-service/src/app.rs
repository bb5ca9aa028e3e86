//! Wiring: what order-service adds to the shared skeleton (`service_kit::service`).
//!
//! - inline: the `orders` read model, written in the transaction of every append to an order;
//! - the consumer of product-service's events: the saga's reaction (a reservation's outcome
//!   confirms or rejects the order) and the `catalog` projection;
//! - replay: `orders` from the store, `catalog` from the inbox (`crate::replay`);
//! - the HTTP routes of `crate::api`, with the audit's client of product-service and the
//!   AsyncAPI document they serve.

use std::sync::Arc;

use actix_web::web;
use event_store::aggregate::Commands;
use event_store::consumer::Reaction;
use event_store::EventStore;
use service_kit::service::{Service, Start};

use crate::api::{self, AppState};
use crate::audit::ProductService;
use crate::config::Config;
use crate::domain::order::Order;
use crate::projections::catalog::CatalogProjection;
use crate::projections::orders::OrdersProjection;
use crate::reactions::reservation::ReservationOutcome;
use crate::replay;

pub use service_kit::service::Application;

/// The service's own migrations (after the event store's).
pub fn migrations() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}

/// The executor of commands on orders, writing the `orders` row with each append
/// (`service_kit::service::commands`).
pub fn commands(store: EventStore) -> Commands<Order> {
    service_kit::service::commands::<Order, OrdersProjection>(store)
}

/// Runs the event store's migrations, then the service's.
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    service_kit::database::migrate(pool, migrations()).await
}

/// Creates the database if needed, migrates it, connects NATS (in the background: the
/// service starts and takes writes while NATS is down), starts the relay and the consumer,
/// and binds `config.http_addr` (port 0 picks a free port).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let asyncapi = web::Data::new(api::asyncapi::document(&config)?);
    let service = Service::start(Start {
        config: &config,
        migrations: migrations(),
        // Orders are this service's own aggregates: their read model is written in the
        // transaction of every append, so a client reads its own writes at once.
        inline: vec![Arc::new(OrdersProjection)],
    })
    .await?;
    let store = service.store().clone();
    // The catalogue first: it writes nothing itself but leaves its rows with the consumer,
    // and the reaction's statement writes them with its append. So the append stays the
    // transaction's first write (it draws the transaction's id, and so its positions), and a
    // batch writes once.
    let reactions: Vec<Arc<dyn Reaction>> = vec![
        Arc::new(CatalogProjection),
        Arc::new(ReservationOutcome::new(store.clone())),
    ];
    service.run_messaging(reactions);
    let state = web::Data::new(AppState {
        pool: service.pool().clone(),
        commands: commands(store),
        product_service: ProductService::new(&config.settings.product_service_url)?,
    });
    service
        .serve(replay::targets(), move |cfg| {
            cfg.app_data(state.clone()).app_data(asyncapi.clone());
            api::configure(cfg);
        })
        .await
}
