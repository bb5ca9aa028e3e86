//! The HTTP API (actix-web): one module per route group, one error type.
//!
//! The admin routes (projection status and online rebuilds) are `service_kit::admin`; `app`
//! registers them only when `ADMIN_TOKEN` is set, and [`openapi`] describes them.
//!
//! [`openapi`] serves the OpenAPI document of the routes at `/openapi.json`, and [`asyncapi`]
//! the AsyncAPI document of the events at `/asyncapi.json`.
//!
//! Writes run a command (`event_store::aggregate::Commands`) and answer with the state and
//! stream version they produced; reads come from the `products` read model and carry the version it reflects.

pub mod asyncapi;
pub mod changes;
pub mod error;
pub mod events;
pub mod openapi;
pub mod products;
pub mod request_id;
pub mod sales;

use actix_web::web;
use event_store::aggregate::Commands;
use event_store::EventStore;
use service_kit::error::resource;
use sqlx::PgPool;

use crate::domain::product::Product;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Reads come from the read model through it.
    pub pool: PgPool,
    /// A product's event history is read from the store.
    pub store: EventStore,
    /// Writes run a command on a product.
    pub commands: Commands<Product>,
}

/// Registers every route. Extractor errors, health, metrics, admin and unrouted paths are
/// the shared skeleton's (`service_kit::service`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(products::routes)
        .configure(changes::routes)
        .configure(events::routes)
        .configure(sales::routes)
        .configure(openapi::routes)
        .configure(asyncapi::routes);
}
