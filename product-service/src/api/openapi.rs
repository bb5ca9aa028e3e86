//! `GET /openapi.json`: the OpenAPI document of every route.

use actix_web::HttpResponse;
use utoipa::OpenApi;

use super::{commands, error, events, health, products};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "product-service",
        description = "Product catalogue and stock, event-sourced. Errors are JSON \
            `{ error, message }`: 400 malformed_json (not JSON), 422 validation_failed (wrong \
            shape or value), 404 not_found (also for a malformed id), 409 version_conflict, \
            413 payload_too_large (over 64 KiB), 503 unavailable."
    ),
    paths(
        products::create,
        products::list,
        products::get,
        commands::change_price,
        commands::restock,
        events::history,
        health::live,
        health::ready,
        document,
    ),
    components(schemas(
        products::CreateProduct,
        products::Product,
        commands::ChangePrice,
        commands::Restock,
        events::StoredEvent,
        error::ErrorBody,
        health::Liveness,
        health::Readiness,
    )),
    tags(
        (name = "products", description = "Catalogue and stock"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
