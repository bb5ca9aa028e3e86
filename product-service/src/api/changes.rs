//! `POST /products/{id}/price` and `POST /products/{id}/restock`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::products::Product;
use super::request_id::RequestContext;
use super::{resource, AppState};
use crate::domain::commands::ProductCommand;
use service_kit::whole_number;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/products/{id}/price").route(web::post().to(change_price)))
        .service(resource("/products/{id}/restock").route(web::post().to(restock)));
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePrice {
    /// New price in cents, > 0. The current price again changes nothing.
    #[schema(example = 1490, minimum = 1)]
    #[serde(deserialize_with = "whole_number::i64")]
    pub price_cents: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Restock {
    /// Units added to the available stock, > 0.
    #[schema(example = 5, minimum = 1)]
    #[serde(deserialize_with = "whole_number::i64")]
    pub quantity: i64,
}

/// Changes a product's price.
#[utoipa::path(
    post,
    path = "/products/{id}/price",
    tag = "products",
    params(("id" = Uuid, Path, description = "Product id")),
    request_body = ChangePrice,
    responses(
        (status = 200, description = "The product after the change, with its new version", body = Product),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 404, description = "Unknown product", body = ErrorBody),
        (status = 409, description = "The product kept changing concurrently", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 422, description = "Missing or invalid field", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn change_price(
    state: web::Data<AppState>,
    context: RequestContext,
    id: web::Path<Uuid>,
    body: web::Json<ChangePrice>,
) -> Result<HttpResponse, ApiError> {
    let command = ProductCommand::ChangePrice {
        price_cents: body.price_cents,
    };
    run(&state, &context, id.into_inner(), command).await
}

/// Adds stock to a product.
#[utoipa::path(
    post,
    path = "/products/{id}/restock",
    tag = "products",
    params(("id" = Uuid, Path, description = "Product id")),
    request_body = Restock,
    responses(
        (status = 200, description = "The product after the restock, with its new version", body = Product),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 404, description = "Unknown product", body = ErrorBody),
        (status = 409, description = "The product kept changing concurrently", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 422, description = "Missing or invalid field, or stock would overflow", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn restock(
    state: web::Data<AppState>,
    context: RequestContext,
    id: web::Path<Uuid>,
    body: web::Json<Restock>,
) -> Result<HttpResponse, ApiError> {
    let command = ProductCommand::Restock {
        quantity: body.quantity,
    };
    run(&state, &context, id.into_inner(), command).await
}

async fn run(
    state: &AppState,
    context: &RequestContext,
    id: Uuid,
    command: ProductCommand,
) -> Result<HttpResponse, ApiError> {
    let outcome = state
        .commands
        .execute(id, command, &context.metadata())
        .await?;
    Ok(HttpResponse::Ok().json(Product::from(outcome)))
}
