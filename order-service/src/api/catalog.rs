//! `/catalog/products`: the local catalogue, as built from product-service's events. Stock here
//! is a hint that lags product-service; the reservation there decides.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::{resource, AppState};
use crate::projections::catalog::{self, CatalogRow};
use service_kit::fresh::{answer_row, MinVersion};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/catalog/products").route(web::get().to(list_products)))
        .service(resource("/catalog/products/{id}").route(web::get().to(get_product)));
}

/// A product as order-service knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProductView {
    pub id: Uuid,
    pub name: String,
    /// The price in minor units (cents) of `currency`.
    pub price_cents: i64,
    #[schema(example = "USD")]
    pub currency: String,
    pub stock_available: i64,
    /// Whether any stock was left, as last seen.
    pub available: bool,
    /// The version of the product's stream in product-service this view reflects.
    pub version: i64,
}

impl From<CatalogRow> for ProductView {
    fn from(row: CatalogRow) -> Self {
        ProductView {
            id: row.product_id,
            name: row.name,
            price_cents: row.price_cents,
            currency: row.currency,
            stock_available: row.stock_available,
            available: row.available,
            version: row.version,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductList {
    /// By name.
    pub products: Vec<ProductView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListProducts {
    /// At most this many products, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// The catalogue, by name.
#[utoipa::path(
    get,
    path = "/catalog/products",
    tag = "catalog",
    params(ListProducts),
    responses(
        (status = 200, description = "Up to `limit` products, by name", body = ProductList),
        (status = 422, description = "`validation_failed`: bad query string or limit", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    )
)]
pub async fn list_products(
    state: web::Data<AppState>,
    query: web::Query<ListProducts>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {limit}"
        )));
    }
    let rows = catalog::list(&state.pool, limit).await?;
    let products = rows.into_iter().map(ProductView::from).collect();
    Ok(HttpResponse::Ok().json(ProductList { products }))
}

/// One product of the catalogue.
#[utoipa::path(
    get,
    path = "/catalog/products/{id}",
    tag = "catalog",
    params(("id" = Uuid, Path, description = "Product id"), MinVersion),
    responses(
        (status = 200, description = "The product; `X-Stale: true` when `min_version` was not reached in time",
            body = ProductView),
        (status = 404, description = "`not_found`: not in the catalogue (or the id is not a uuid)", body = ErrorBody),
        (status = 422, description = "`validation_failed`: bad query string", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    )
)]
pub async fn get_product(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    query: web::Query<MinVersion>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    answer_row(
        query.min_version,
        |row: &CatalogRow| row.version,
        || catalog::find(&state.pool, id),
        || ApiError::NotFound(format!("product {id} is not in the catalogue")),
        |row| Ok(ProductView::from(row)),
    )
    .await
}
