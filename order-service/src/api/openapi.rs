//! The OpenAPI document of every route, served at `/openapi.json`.

use actix_web::{web, HttpResponse};
use utoipa::OpenApi;

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
        super::health::live,
        super::health::ready,
        openapi_json,
    ),
    components(schemas(
        super::error::ErrorBody,
        super::orders::PlaceOrderRequest,
        super::orders::LineRequest,
        super::orders::OrderView,
        super::orders::OrderList,
        super::catalog::ProductView,
        super::catalog::ProductList,
        super::health::Live,
        super::health::Ready,
        crate::domain::events::OrderLine,
        crate::domain::order::OrderStatus,
    )),
    tags(
        (name = "orders", description = "Place, read and cancel orders"),
        (name = "catalog", description = "The local catalogue built from product-service's events"),
        (name = "health", description = "Liveness and readiness"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/openapi.json").route(web::get().to(openapi_json)));
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
