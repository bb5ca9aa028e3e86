//! `GET /openapi.json`: the OpenAPI document of every route.

use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use service_kit::admin;

use super::{changes, error, events, products, resource, sales};
use service_kit::health;

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
        changes::change_price,
        changes::restock,
        events::history,
        sales::daily,
        health::live,
        health::ready,
        admin::list_projections,
        admin::rebuild_projection,
        admin::republish,
        document,
        service_kit::asyncapi::asyncapi_json,
        service_kit::prometheus::metrics,
    ),
    components(schemas(
        products::CreateProduct,
        products::Product,
        changes::ChangePrice,
        changes::Restock,
        events::StoredEvent,
        crate::projections::sales::SalesDay,
        error::ErrorBody,
        health::Live,
        health::Ready,
        admin::ProjectionList,
        admin::ProjectionView,
        admin::RebuildView,
        admin::RepublishRequest,
        admin::RepublishReport,
    )),
    tags(
        (name = "products", description = "Catalogue and stock"),
        (name = "health", description = "Liveness and readiness"),
        (name = "admin", description = "Projection status and online rebuilds; needs \
            `Authorization: Bearer <ADMIN_TOKEN>`, and exists only when ADMIN_TOKEN is set"),
        (name = "meta", description = "This document, and the AsyncAPI document of the events \
            this service publishes and consumes"),
    ),
    modifiers(&AdminSecurity)
)]
pub struct ApiDoc;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/openapi.json").route(web::get().to(document)));
}

/// The `admin_token` bearer scheme the admin routes name.
struct AdminSecurity;

impl Modify for AdminSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("The value of the service's ADMIN_TOKEN.".to_owned());
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("admin_token", SecurityScheme::Http(scheme));
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
