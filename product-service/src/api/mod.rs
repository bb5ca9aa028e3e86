//! The HTTP API (actix-web): one module per route group, one error type.
//!
//! The admin routes (projection status and online rebuilds) are `service_kit::admin`; `app`
//! registers them only when `ADMIN_TOKEN` is set, and [`openapi`] describes them.
//!
//! Writes run a command (`crate::commands`) and answer with the state and stream version they
//! produced; reads come from the `products` read model and carry the version it reflects.

pub mod commands;
pub mod error;
pub mod events;
pub mod health;
pub mod openapi;
pub mod products;
pub mod request_id;

use std::time::Duration;

use actix_web::{web, HttpResponse};
use event_store::metrics::Reader;
use event_store::EventStore;
use service_kit::error::resource;
use sqlx::PgPool;

use crate::commands::ProductCommands;
use error::ApiError;

/// Largest JSON body accepted.
pub const JSON_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
pub struct ApiState {
    pub pool: PgPool,
    pub store: EventStore,
    pub commands: ProductCommands,
    pub nats: async_nats::Client,
    /// The relay and projectors whose lag readiness checks.
    pub readers: Vec<Reader>,
    /// Readiness fails when one of them is this far behind; `None`: never for lag.
    pub ready_max_lag: Option<Duration>,
}

/// Registers every route, and makes actix's own extractor errors answer in the API's format.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(error::json_error),
    )
    .app_data(web::PathConfig::default().error_handler(error::path_error))
    .app_data(web::QueryConfig::default().error_handler(error::query_error))
    .service(
        resource("/products")
            .route(web::post().to(products::create))
            .route(web::get().to(products::list)),
    )
    .service(resource("/products/{id}").route(web::get().to(products::get)))
    .service(resource("/products/{id}/price").route(web::post().to(commands::change_price)))
    .service(resource("/products/{id}/restock").route(web::post().to(commands::restock)))
    .service(resource("/products/{id}/events").route(web::get().to(events::history)))
    .service(resource("/health/live").route(web::get().to(health::live)))
    .service(resource("/health/ready").route(web::get().to(health::ready)))
    .service(resource("/openapi.json").route(web::get().to(openapi::document)));
}

/// Any path no route matches.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such resource".to_owned()))
}
