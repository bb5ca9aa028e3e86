//! The HTTP API (actix-web): one module per route group, one error type, the OpenAPI document.
//!
//! - [`orders`]: place, read, list and cancel orders. Writes go through `commands`; reads come
//!   from the `orders` read model.
//! - [`catalog`]: the local catalogue of products.
//! - [`audit`]: `GET /admin/audit`, the catalogue against product-service (`crate::audit`),
//!   behind the admin token like the shared admin routes.
//! - [`openapi`]: the document at `/openapi.json`, which also describes the admin routes
//!   (`service_kit::admin`, behind `ADMIN_TOKEN`).
//! - [`asyncapi`]: the AsyncAPI document of the events at `/asyncapi.json`.
//! - [`request_id`]: `X-Request-Id` and `traceparent` in, correlation id and trace context of
//!   the events, echoed out; also times each request (`/metrics`, from `service-kit`).

pub mod asyncapi;
pub mod audit;
pub mod catalog;
pub mod error;
pub mod openapi;
pub mod orders;
pub mod request_id;

use actix_web::web;
use event_store::aggregate::Commands;
use service_kit::error::resource;
use sqlx::PgPool;

use crate::audit::ProductService;
use crate::domain::order::Order;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Reads come from the read models through it.
    pub pool: PgPool,
    /// Writes run a command on an order.
    pub commands: Commands<Order>,
    /// The audit's source of truth.
    pub product_service: ProductService,
}

/// Registers every route. Extractor errors, health, metrics, admin and unrouted paths are
/// the shared skeleton's (`service_kit::service`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(orders::routes)
        .configure(catalog::routes)
        .configure(audit::routes)
        .configure(openapi::routes)
        .configure(asyncapi::routes);
}
