//! The HTTP API (actix-web): one module per route group, one error type, the OpenAPI document.
//!
//! - [`orders`]: place, read, list and cancel orders. Writes go through `commands`; reads come
//!   from the `orders` read model.
//! - [`catalog`]: the local catalogue of products.
//! - [`health`]: liveness and readiness.
//! - [`openapi`]: the document at `/openapi.json`, which also describes the admin routes
//!   (`service_kit::admin`, behind `ADMIN_TOKEN`).
//! - [`request_id`]: `X-Request-Id` and `traceparent` in, correlation id and trace context of
//!   the events, echoed out; also times each request (`/metrics`, from `service-kit`).
//! - [`fresh`]: `?min_version=` waits for a read model to catch up with a write.

pub mod catalog;
pub mod error;
pub mod fresh;
pub mod health;
pub mod openapi;
pub mod orders;
pub mod request_id;

use std::time::Duration;

use actix_web::{web, HttpResponse};
use event_store::metrics::Reader;
use event_store::EventStore;
use service_kit::error::resource;
use sqlx::PgPool;

use error::{json_error, path_error, query_error, ApiError, JSON_LIMIT};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub store: EventStore,
    /// For readiness only; publishing is the relay's job.
    pub nats: async_nats::Client,
    /// The relay and projectors whose lag readiness checks.
    pub readers: Vec<Reader>,
    /// Readiness fails when one of them is this far behind; `None`: never for lag.
    pub ready_max_lag: Option<Duration>,
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

async fn not_found(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
