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
use crate::domain::product::ProductState;
use event_store::aggregate::{Loaded, On};
use event_store::idempotency::Kept;
use service_kit::idempotency::{execute, Key, KeyHeader};
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
    params(("id" = Uuid, Path, description = "Product id"), KeyHeader),
    request_body = ChangePrice,
    responses(
        (status = 200, description = "The product after the change, with its new version (for a \
            retried `Idempotency-Key`, the first answer again)", body = Product,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replayed answer"))),
        (status = 400, description = "Not JSON; `invalid_idempotency_key`", body = ErrorBody),
        (status = 404, description = "Unknown product", body = ErrorBody),
        (status = 409, description = "The product kept changing concurrently; \
            `idempotency_key_in_flight`: the first request with the key is still running",
            body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 422, description = "Missing or invalid field; `idempotency_key_reused`: the \
            key was used for another request", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn change_price(
    state: web::Data<AppState>,
    context: RequestContext,
    key: Key,
    id: web::Path<Uuid>,
    body: web::Json<ChangePrice>,
) -> Result<HttpResponse, ApiError> {
    let command = ProductCommand::ChangePrice {
        price_cents: body.price_cents,
    };
    run(&state, &context, &key, id.into_inner(), command).await
}

/// Adds stock to a product.
#[utoipa::path(
    post,
    path = "/products/{id}/restock",
    tag = "products",
    params(("id" = Uuid, Path, description = "Product id"), KeyHeader),
    request_body = Restock,
    responses(
        (status = 200, description = "The product after the restock, with its new version (for a \
            retried `Idempotency-Key`, the first answer again)", body = Product,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replayed answer"))),
        (status = 400, description = "Not JSON; `invalid_idempotency_key`", body = ErrorBody),
        (status = 404, description = "Unknown product", body = ErrorBody),
        (status = 409, description = "The product kept changing concurrently; \
            `idempotency_key_in_flight`: the first request with the key is still running",
            body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 422, description = "Missing or invalid field, or stock would overflow; \
            `idempotency_key_reused`: the key was used for another request", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn restock(
    state: web::Data<AppState>,
    context: RequestContext,
    key: Key,
    id: web::Path<Uuid>,
    body: web::Json<Restock>,
) -> Result<HttpResponse, ApiError> {
    let command = ProductCommand::Restock {
        quantity: body.quantity,
    };
    run(&state, &context, &key, id.into_inner(), command).await
}

async fn run(
    state: &AppState,
    context: &RequestContext,
    key: &Key,
    id: Uuid,
    command: ProductCommand,
) -> Result<HttpResponse, ApiError> {
    let changed = |done: &Loaded<ProductState>| Kept::json(200, None, &Product::from(done.clone()));
    let on = On::Existing(id);
    execute(&state.commands, context, key, on, command, &changed).await
}
