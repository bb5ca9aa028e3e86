//! `GET /products/{id}/sales`: a product's units reserved and released per day, from the
//! `product_sales_daily` projection (a moment behind the store: its projector applies what
//! was appended since its checkpoint).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::error::{product_not_found, ApiError, ErrorBody};
use super::{resource, AppState};
use crate::projections::{products, sales};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/products/{id}/sales").route(web::get().to(daily)));
}

/// The most days one answer holds.
const MAX_DAYS: i64 = 366;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Days {
    /// How many of the most recent days with sales to answer (1 to 366; 30 if absent).
    #[param(minimum = 1, maximum = 366)]
    pub days: Option<i64>,
}

/// The product's most recent days with sales, oldest first; days without any are left out.
#[utoipa::path(
    get,
    path = "/products/{id}/sales",
    tag = "products",
    params(("id" = Uuid, Path, description = "Product id"), Days),
    responses(
        (status = 200, body = [sales::SalesDay]),
        (status = 404, description = "Unknown product (or malformed id)", body = ErrorBody),
        (status = 422, description = "`days` outside 1 to 366", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn daily(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    params: web::Query<Days>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let days = params.days.unwrap_or(30);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::Validation(format!(
            "days must be 1 to {MAX_DAYS}, got {days}"
        )));
    }
    if products::get(&state.pool, id).await?.is_none() {
        return Err(product_not_found());
    }
    let body = sales::of_product(&state.pool, id, days).await?;
    Ok(HttpResponse::Ok().json(body))
}
