//! The upcast steps of every old event version this service reads: its own `OrderPlaced`
//! v1, and product-service's `ProductCreated` and `PriceChanged` v1 (the conversions
//! product-service has, since a consumer reads every version its producer ever wrote). Pure
//! functions on the payload (docs/adr/0007-evolving-events.md).
//!
//! Each step reads the old payload through a type of that version (`OrderPlacedV1`, ...), so
//! the AsyncAPI document gives old versions the schema of the type that actually reads them
//! (`crate::api::asyncapi`), and a step refuses what serde refuses, naming the field.

use event_store::wire::{read_as, with_fields, write_as};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::events::{Money, OrderLine, OrderPlaced};

/// Every price before version 2 was in the one currency the system then had.
pub const V1_CURRENCY: &str = "USD";

/// `OrderPlaced` as version 1 wrote it: prices in bare cents of `USD`, the one currency of
/// version 1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderPlacedV1 {
    pub order_id: Uuid,
    pub customer_id: String,
    pub lines: Vec<OrderLineV1>,
    pub total_cents: i64,
}

/// One line of a version-1 `OrderPlaced`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderLineV1 {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// product-service's `ProductCreated` as it wrote it at version 1: the price in bare cents
/// of `USD`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ProductCreatedV1 {
    pub product_id: Uuid,
    pub name: String,
    pub price_cents: i64,
    pub initial_stock: i64,
    /// Fields this service does not read, handed on unchanged.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// product-service's `PriceChanged` as it wrote it at version 1: both prices in bare cents
/// of `USD`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct PriceChangedV1 {
    pub product_id: Uuid,
    pub old_price_cents: i64,
    pub price_cents: i64,
    /// Fields this service does not read, handed on unchanged.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `OrderPlaced` v1 to v2: each line's `unit_price_cents` becomes `unit_price`, and
/// `total_cents` becomes `total`, in [`V1_CURRENCY`].
pub fn order_placed_v1(payload: Value) -> Result<Value, String> {
    let v1: OrderPlacedV1 = read_as(payload)?;
    let lines = v1
        .lines
        .into_iter()
        .map(|line| OrderLine {
            product_id: line.product_id,
            quantity: line.quantity,
            unit_price: usd(line.unit_price_cents),
        })
        .collect();
    write_as(OrderPlaced {
        order_id: v1.order_id,
        customer_id: v1.customer_id,
        lines,
        total: usd(v1.total_cents),
    })
}

/// product-service's `ProductCreated` v1 to v2: `price_cents` becomes `price`.
pub fn product_created_v1(payload: Value) -> Result<Value, String> {
    let v1: ProductCreatedV1 = read_as(payload)?;
    Ok(with_fields(
        v1.other,
        [
            ("product_id", json!(v1.product_id)),
            ("name", json!(v1.name)),
            ("price", json!(usd(v1.price_cents))),
            ("initial_stock", json!(v1.initial_stock)),
        ],
    ))
}

/// product-service's `PriceChanged` v1 to v2: `old_price_cents` and `price_cents` become
/// `old_price` and `price`.
pub fn price_changed_v1(payload: Value) -> Result<Value, String> {
    let v1: PriceChangedV1 = read_as(payload)?;
    Ok(with_fields(
        v1.other,
        [
            ("product_id", json!(v1.product_id)),
            ("old_price", json!(usd(v1.old_price_cents))),
            ("price", json!(usd(v1.price_cents))),
        ],
    ))
}

fn usd(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: V1_CURRENCY.to_owned(),
    }
}
