//! `POST /products`, `GET /products`, `GET /products/{id}`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{product_not_found, ApiError, ErrorBody};
use super::request_id::RequestContext;
use super::{resource, AppState};
use crate::domain::commands::ProductCommand;
use crate::domain::product::ProductState;
use crate::projections::products::{self, ProductRow};
use event_store::aggregate::{Loaded, On};
use event_store::idempotency::Kept;
use service_kit::fresh::{answer_row, MinVersion};
use service_kit::idempotency::{execute, Key, KeyHeader};
use service_kit::whole_number;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/products")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(resource("/products/{id}").route(web::get().to(get)));
}

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateProduct {
    /// 1 to 200 characters after trimming. No NUL characters.
    #[schema(
        example = "Espresso cup",
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00]*[^\x00\s][^\x00]*$"
    )]
    pub name: String,
    /// Price in minor units (cents) of `currency`, > 0.
    #[schema(example = 1250, minimum = 1)]
    #[serde(deserialize_with = "whole_number::i64")]
    pub price_cents: i64,
    /// The product's currency, three upper-case letters (ISO 4217); `USD` when left out.
    /// Fixed for the product's life: price changes are in it.
    #[schema(example = "USD", pattern = "^[A-Z]{3}$")]
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Initial stock, >= 0.
    #[schema(example = 10, minimum = 0)]
    #[serde(deserialize_with = "whole_number::i64")]
    pub stock: i64,
}

/// The currency of a product created without one: the only one before events carried it.
fn default_currency() -> String {
    crate::domain::upcast::V1_CURRENCY.to_owned()
}

/// A product, with the stream version it reflects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Product {
    pub id: Uuid,
    pub name: String,
    /// The price in minor units (cents) of `currency`.
    pub price_cents: i64,
    #[schema(example = "USD")]
    pub currency: String,
    pub stock_available: i64,
    pub stock_reserved: i64,
    /// The product stream's version this state includes. After a write, pass it as
    /// `min_version` to a read to wait until the read model has caught up.
    pub version: i64,
}

impl From<ProductRow> for Product {
    fn from(row: ProductRow) -> Self {
        Product {
            id: row.id,
            name: row.name,
            price_cents: row.price_cents,
            currency: row.currency,
            stock_available: row.stock_available,
            stock_reserved: row.stock_reserved,
            version: row.version,
        }
    }
}

impl From<Loaded<ProductState>> for Product {
    fn from(outcome: Loaded<ProductState>) -> Self {
        let state = outcome.state;
        Product {
            id: state.product_id,
            name: state.name,
            price_cents: state.price_cents,
            currency: state.currency,
            stock_available: state.stock_available,
            stock_reserved: state.stock_reserved,
            version: outcome.version,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// At most this many products, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Skip this many products first (default 0).
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

/// Adds a product to the catalogue.
#[utoipa::path(
    post,
    path = "/products",
    tag = "products",
    request_body = CreateProduct,
    params(KeyHeader),
    responses(
        (status = 201, description = "Created; the body is the state the write produced (for a \
            retried `Idempotency-Key`, the first answer again)",
            body = Product, headers(("Location" = String, description = "/products/{id}"),
                ("Idempotent-Replayed" = String, description = "`true` on a replayed answer"))),
        (status = 400, description = "Not JSON; `invalid_idempotency_key`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_in_flight`: the first request with the \
            key is still running", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 422, description = "Missing or invalid field; `idempotency_key_reused`: the \
            key was used for another request", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    context: RequestContext,
    key: Key,
    body: web::Json<CreateProduct>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    ApiError::storable("name", &body.name)?;
    // With a key, every attempt names the same product.
    let product_id = key.new_id("product-id");
    let command = ProductCommand::CreateProduct {
        product_id,
        name: body.name,
        price_cents: body.price_cents,
        currency: body.currency,
        stock: body.stock,
    };
    let created = |done: &Loaded<ProductState>| {
        let location = Some(format!("/products/{product_id}"));
        Kept::json(201, location, &Product::from(done.clone()))
    };
    let on = On::New(product_id);
    execute(&state.commands, &context, &key, on, command, &created).await
}

/// Lists products by name, then id.
#[utoipa::path(
    get,
    path = "/products",
    tag = "products",
    params(ListParams),
    responses(
        (status = 200, body = [Product]),
        (status = 422, description = "limit or offset out of range", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    state: web::Data<AppState>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    let offset = params.offset.unwrap_or(0);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {limit}"
        )));
    }
    if offset < 0 {
        return Err(ApiError::Validation(format!(
            "offset must not be negative, got {offset}"
        )));
    }
    let rows = products::list(&state.pool, limit, offset).await?;
    let body: Vec<Product> = rows.into_iter().map(Product::from).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// One product from the read model.
#[utoipa::path(
    get,
    path = "/products/{id}",
    tag = "products",
    params(("id" = Uuid, Path, description = "Product id"), MinVersion),
    responses(
        (status = 200, body = Product,
            headers(("X-Stale" = String, description = "`true` when min_version was not reached in time"))),
        (status = 404, description = "Unknown product (or malformed id)", body = ErrorBody),
        (status = 422, description = "Bad query string", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    params: web::Query<MinVersion>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    answer_row(
        params.min_version,
        |row: &ProductRow| row.version,
        || products::get(&state.pool, id),
        product_not_found,
        |row| Ok(Product::from(row)),
    )
    .await
}
