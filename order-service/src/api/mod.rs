//! The HTTP API (actix-web): one module per route group, one error type, the OpenAPI document.
//!
//! - [`orders`]: place, read, list and cancel orders. Writes go through `commands`; reads come
//!   from the `orders` read model.
//! - [`catalog`]: the local catalogue of products.
//! - [`health`]: liveness and readiness.
//! - [`admin`]: projection status and online rebuilds, behind `ADMIN_TOKEN`.
//! - [`openapi`]: the document at `/openapi.json`.
//! - [`request_id`]: `X-Request-Id` in, correlation id of the events, echoed out.
//! - [`fresh`]: `?min_version=` waits for a read model to catch up with a write.

pub mod admin;
pub mod catalog;
pub mod error;
pub mod fresh;
pub mod health;
pub mod openapi;
pub mod orders;
pub mod request_id;

use actix_web::{web, HttpResponse};
use event_store::replay::Rebuilds;
use event_store::EventStore;
use sqlx::PgPool;

use crate::config::AdminToken;

use error::{json_error, path_error, query_error, ApiError, JSON_LIMIT};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub store: EventStore,
    /// For readiness only; publishing is the relay's job.
    pub nats: async_nats::Client,
    /// Rebuilds started over `/admin`.
    pub rebuilds: Rebuilds,
    /// `None`: the admin routes are not registered.
    pub admin_token: Option<AdminToken>,
}

/// Registers every route and the extractor configuration that turns their errors into JSON.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(json_error),
    )
    .app_data(web::PathConfig::default().error_handler(path_error))
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .configure(orders::routes)
    .configure(catalog::routes)
    .configure(health::routes)
    .configure(openapi::routes)
    .default_service(web::to(not_found));
}

/// The admin routes, registered only when an admin token is configured.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.configure(admin::routes);
}

/// A resource whose other methods answer 405 with the JSON error body.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn not_found(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

async fn method_not_allowed(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed(req.method().to_string()))
}
