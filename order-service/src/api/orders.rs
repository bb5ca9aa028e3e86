//! `/orders`: place, read, list and cancel orders.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::{unknown_products, ApiError, ErrorBody};
use super::request_id::RequestContext;
use super::{resource, AppState};
use crate::domain::commands::OrderCommand;
use crate::domain::events::{Money, OrderLine};
use crate::domain::order::{OrderState, OrderStatus};
use crate::projections::orders::PricedLine;
use crate::projections::{catalog, orders};
use event_store::aggregate::{Loaded, On};
use event_store::idempotency::Kept;
use service_kit::fresh::{answer_row, MinVersion};
use service_kit::idempotency::{execute, Key, KeyHeader};
use service_kit::whole_number;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/orders")
            .route(web::post().to(place_order))
            .route(web::get().to(list_orders)),
    )
    .service(resource("/orders/{id}").route(web::get().to(get_order)))
    .service(resource("/orders/{id}/cancel").route(web::post().to(cancel_order)));
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PlaceOrderRequest {
    /// 1 to 100 characters; surrounding spaces are trimmed. No NUL characters.
    #[schema(
        example = "alice",
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00]*[^\x00\s][^\x00]*$"
    )]
    pub customer_id: String,
    /// 1 to 100 lines.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<LineRequest>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LineRequest {
    /// A product of the catalogue (`GET /catalog/products`).
    pub product_id: Uuid,
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(deserialize_with = "whole_number::i64")]
    pub quantity: i64,
}

/// An order as the read model (or a write) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub customer_id: String,
    pub status: OrderStatus,
    /// Each line with the unit price (in minor units of `currency`) taken from the
    /// catalogue when the order was placed.
    pub lines: Vec<PricedLine>,
    pub total_cents: i64,
    /// The currency of the total and of every line: the products'.
    #[schema(example = "USD")]
    pub currency: String,
    /// Why the stock could not be reserved; only on rejected orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
    /// The version of the order's stream this view reflects.
    pub version: i64,
}

impl OrderView {
    fn from_state(state: OrderState, version: i64) -> Self {
        OrderView {
            id: state.order_id,
            customer_id: state.customer_id,
            status: state.status.unwrap_or(OrderStatus::Pending),
            lines: state
                .lines
                .iter()
                .map(|line| PricedLine {
                    product_id: line.product_id,
                    quantity: line.quantity,
                    unit_price_cents: line.unit_price.amount_minor,
                })
                .collect(),
            total_cents: state.total.amount_minor,
            currency: state.total.currency,
            rejection_reason: state.rejection_reason,
            version,
        }
    }

    fn from_row(row: orders::OrderRow) -> Result<Self, ApiError> {
        let status = row.status().map_err(ApiError::Internal)?;
        Ok(OrderView {
            id: row.order_id,
            customer_id: row.customer_id,
            status,
            lines: row.lines.0,
            total_cents: row.total_cents,
            currency: row.currency,
            rejection_reason: row.rejection_reason,
            version: row.version,
        })
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderList {
    /// Newest first.
    pub orders: Vec<OrderView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListOrders {
    /// Only this customer's orders (an empty value filters nothing). No NUL characters.
    #[param(pattern = r"^[^\x00]*$")]
    pub customer_id: Option<String>,
    /// At most this many orders, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// Place an order. Lines are checked against the local catalogue, which also gives the prices.
/// The order starts `pending`; product-service then reserves its stock or rejects it.
#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    request_body = PlaceOrderRequest,
    params(KeyHeader),
    responses(
        (status = 201, description = "Placed, pending (or, for a retried `Idempotency-Key`, the \
            first answer again)", body = OrderView,
            headers(("Location" = String, description = "`/orders/{id}`"),
                ("Idempotent-Replayed" = String, description = "`true` on a replayed answer"))),
        (status = 400, description = "`malformed_json`: not JSON, or not sent as JSON; \
            `invalid_idempotency_key`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_in_flight`: the first request with the \
            key is still running", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over 64 KiB", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a field missing, of the wrong type or \
            out of range, or products priced in different currencies; `unknown_product`: a \
            product not in the catalogue; \
            `idempotency_key_reused`: the key was used for another request", body = ErrorBody),
        (status = 503, description = "`unavailable`: the database is down", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(order_id = tracing::field::Empty))]
pub async fn place_order(
    state: web::Data<AppState>,
    context: RequestContext,
    key: Key,
    body: web::Json<PlaceOrderRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    ApiError::storable("customer_id", &body.customer_id)?;
    let ids: Vec<Uuid> = body.lines.iter().map(|l| l.product_id).collect();
    let catalogue = catalog::find_many(&state.pool, &ids).await?;
    let mut unknown: Vec<Uuid> = Vec::new();
    let mut lines = Vec::with_capacity(body.lines.len());
    for line in &body.lines {
        match catalogue.get(&line.product_id) {
            Some(product) => lines.push(OrderLine {
                product_id: line.product_id,
                quantity: line.quantity,
                unit_price: Money {
                    amount_minor: product.price_cents,
                    currency: product.currency.clone(),
                },
            }),
            None if !unknown.contains(&line.product_id) => unknown.push(line.product_id),
            None => {}
        }
    }
    if !unknown.is_empty() {
        return Err(unknown_products(&unknown));
    }
    // With a key, every attempt names the same order.
    let order_id = key.new_id("order-id");
    tracing::Span::current().record("order_id", tracing::field::display(order_id));
    let command = OrderCommand::PlaceOrder {
        order_id,
        customer_id: body.customer_id,
        lines,
    };
    let placed = |done: &Loaded<OrderState>| {
        let view = OrderView::from_state(done.state.clone(), done.version);
        Kept::json(201, Some(format!("/orders/{order_id}")), &view)
    };
    let on = On::New(order_id);
    execute(&state.commands, &context, &key, on, command, &placed).await
}

/// One order, from the read model.
#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    params(("id" = Uuid, Path, description = "Order id"), MinVersion),
    responses(
        (status = 200, description = "The order; `X-Stale: true` when `min_version` was not reached in time",
            body = OrderView),
        (status = 404, description = "`not_found`: no such order (or the id is not a uuid)", body = ErrorBody),
        (status = 422, description = "`validation_failed`: bad query string", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    )
)]
pub async fn get_order(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    query: web::Query<MinVersion>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    answer_row(
        query.min_version,
        |row: &orders::OrderRow| row.version,
        || orders::find(&state.pool, id),
        || ApiError::NotFound(format!("order {id} not found")),
        OrderView::from_row,
    )
    .await
}

/// Orders, newest first, optionally of one customer.
#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    params(ListOrders),
    responses(
        (status = 200, description = "Up to `limit` orders, newest first", body = OrderList),
        (status = 422, description = "`validation_failed`: bad query string or limit", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    )
)]
pub async fn list_orders(
    state: web::Data<AppState>,
    query: web::Query<ListOrders>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {limit}"
        )));
    }
    let customer = query
        .customer_id
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    if let Some(customer) = customer {
        ApiError::storable("customer_id", customer)?;
    }
    let rows = orders::list(&state.pool, customer, limit).await?;
    let orders = rows
        .into_iter()
        .map(OrderView::from_row)
        .collect::<Result<_, _>>()?;
    Ok(HttpResponse::Ok().json(OrderList { orders }))
}

/// Cancel a pending or confirmed order; product-service then releases its stock.
#[utoipa::path(
    post,
    path = "/orders/{id}/cancel",
    tag = "orders",
    params(("id" = Uuid, Path, description = "Order id"), KeyHeader),
    responses(
        (status = 200, description = "The order, cancelled (or, for a retried \
            `Idempotency-Key`, the first answer again)", body = OrderView,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replayed answer"))),
        (status = 400, description = "`invalid_idempotency_key`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such order", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: the order is rejected or already \
            cancelled; `version_conflict`: it kept changing concurrently; \
            `idempotency_key_in_flight`: the first request with the key is still running",
            body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the key was used for another \
            request", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(order_id = %id))]
pub async fn cancel_order(
    state: web::Data<AppState>,
    context: RequestContext,
    key: Key,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let cancelled = |done: &Loaded<OrderState>| {
        let view = OrderView::from_state(done.state.clone(), done.version);
        Kept::json(200, None, &view)
    };
    let (on, command) = (On::Existing(id.into_inner()), OrderCommand::Cancel);
    execute(&state.commands, &context, &key, on, command, &cancelled).await
}
