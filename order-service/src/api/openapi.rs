//! The OpenAPI document of every route, served at `/openapi.json`.

use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::resource;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "order-service",
        description = "Orders and the order side of the stock reservation saga. Errors are \
            `{ error, message }`: 400 for bodies that are not JSON, 422 for JSON of the wrong \
            shape or breaking a rule, 404 for unknown ids (also ids that are not uuids)."
    ),
    paths(
        super::orders::place_order,
        super::orders::get_order,
        super::orders::list_orders,
        super::orders::cancel_order,
        super::catalog::list_products,
        super::catalog::get_product,
        service_kit::health::live,
        service_kit::health::ready,
        service_kit::admin::list_projections,
        service_kit::admin::rebuild_projection,
        service_kit::admin::republish,
        super::audit::run_audit,
        openapi_json,
        service_kit::asyncapi::asyncapi_json,
        service_kit::prometheus::metrics,
    ),
    components(schemas(
        super::error::ErrorBody,
        super::orders::PlaceOrderRequest,
        super::orders::LineRequest,
        super::orders::OrderView,
        super::orders::OrderList,
        super::catalog::ProductView,
        super::catalog::ProductList,
        service_kit::health::Live,
        service_kit::health::Ready,
        service_kit::admin::ProjectionList,
        service_kit::admin::ProjectionView,
        service_kit::admin::RebuildView,
        service_kit::admin::RepublishRequest,
        service_kit::admin::RepublishReport,
        crate::audit::Audit,
        crate::audit::Disagreement,
        crate::audit::Reason,
        crate::projections::orders::PricedLine,
        crate::domain::order::OrderStatus,
    )),
    tags(
        (name = "orders", description = "Place, read and cancel orders"),
        (name = "catalog", description = "The local catalogue built from product-service's events"),
        (name = "health", description = "Liveness and readiness"),
        (name = "admin", description = "Projection status, online rebuilds and the consistency \
            audit; needs \
            `Authorization: Bearer <ADMIN_TOKEN>`, and exists only when ADMIN_TOKEN is set"),
        (name = "meta", description = "This document, and the AsyncAPI document of the events \
            this service publishes and consumes"),
    ),
    modifiers(&AdminSecurity)
)]
pub struct ApiDoc;

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

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/openapi.json").route(web::get().to(openapi_json)));
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
