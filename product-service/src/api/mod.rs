//! The HTTP API (actix-web): one module per route group, one error type.
//!
//! `admin` (projection status and online rebuilds) exists only when `ADMIN_TOKEN` is set.
//!
//! Writes run a command (`crate::commands`) and answer with the state and stream version they
//! produced; reads come from the `products` read model and carry the version it reflects.

pub mod admin;
pub mod commands;
pub mod error;
pub mod events;
pub mod health;
pub mod openapi;
pub mod products;
pub mod request_id;

use actix_web::{web, HttpResponse};
use event_store::replay::Rebuilds;
use event_store::EventStore;
use sqlx::PgPool;

use crate::commands::ProductCommands;
use crate::config::AdminToken;
use error::ApiError;

/// Largest JSON body accepted.
pub const JSON_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
pub struct ApiState {
    pub pool: PgPool,
    pub store: EventStore,
    pub commands: ProductCommands,
    pub nats: async_nats::Client,
    /// Rebuilds started over `/admin`.
    pub rebuilds: Rebuilds,
    /// `None`: the admin routes are not registered.
    pub admin_token: Option<AdminToken>,
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
        web::resource("/products")
            .route(web::post().to(products::create))
            .route(web::get().to(products::list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/products/{id}")
            .route(web::get().to(products::get))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/products/{id}/price")
            .route(web::post().to(commands::change_price))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/products/{id}/restock")
            .route(web::post().to(commands::restock))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/products/{id}/events")
            .route(web::get().to(events::history))
            .default_service(web::to(method_not_allowed)),
    )
    .route("/health/live", web::get().to(health::live))
    .route("/health/ready", web::get().to(health::ready))
    .route("/openapi.json", web::get().to(openapi::document));
}

/// The admin routes, registered only when an admin token is configured.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    admin::routes(cfg);
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed(
        "this method is not allowed on this resource".to_owned(),
    ))
}

/// Any path no route matches.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such resource".to_owned()))
}
