//! The upcast steps of every old event version this service reads: its own `ProductCreated`
//! and `PriceChanged` v1, and order-service's `OrderPlaced` v1 (the conversion order-service
//! has, since a consumer reads every version its producer ever wrote). Pure functions on the
//! payload (docs/adr/0007-evolving-events.md).
//!
//! Each step reads the old payload through a type of that version (`ProductCreatedV1`, ...),
//! so the AsyncAPI document gives old versions the schema of the type that actually reads
//! them (`crate::api::asyncapi`), and a step refuses what serde refuses, naming the field.

use event_store::wire::{read_as, with_fields, write_as};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::events::{Money, PriceChanged, ProductCreated};

/// Every price before version 2 was in the one currency the system then had.
pub const V1_CURRENCY: &str = "USD";

/// `ProductCreated` as version 1 wrote it: the price in bare cents of `USD`, the one currency
/// of version 1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ProductCreatedV1 {
    pub product_id: Uuid,
    pub name: String,
    pub price_cents: i64,
    pub initial_stock: i64,
}

/// `PriceChanged` as version 1 wrote it: both prices in bare cents of `USD`, the one currency
/// of version 1.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct PriceChangedV1 {
    pub product_id: Uuid,
    pub old_price_cents: i64,
    pub price_cents: i64,
}

/// order-service's `OrderPlaced` as it wrote it at version 1, as far as this service reads
/// it: its lines, with their prices in bare cents of `USD`, and `total_cents`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderPlacedV1 {
    pub order_id: Uuid,
    pub lines: Vec<OrderedLineV1>,
    pub total_cents: i64,
    /// The fields this service does not read (the customer), handed on unchanged, so the step
    /// gives order-service's version 2 whole.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One line of a version-1 `OrderPlaced`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderedLineV1 {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_cents: i64,
    /// Fields this service does not read, handed on unchanged.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `ProductCreated` v1 to v2: `price_cents` becomes `price` in [`V1_CURRENCY`].
pub fn product_created_v1(payload: Value) -> Result<Value, String> {
    let v1: ProductCreatedV1 = read_as(payload)?;
    write_as(ProductCreated {
        product_id: v1.product_id,
        name: v1.name,
        price: usd(v1.price_cents),
        initial_stock: v1.initial_stock,
    })
}

/// `PriceChanged` v1 to v2: `old_price_cents` and `price_cents` become `old_price` and
/// `price` in [`V1_CURRENCY`].
pub fn price_changed_v1(payload: Value) -> Result<Value, String> {
    let v1: PriceChangedV1 = read_as(payload)?;
    write_as(PriceChanged {
        product_id: v1.product_id,
        old_price: usd(v1.old_price_cents),
        price: usd(v1.price_cents),
    })
}

/// order-service's `OrderPlaced` v1 to v2: each line's `unit_price_cents` becomes
/// `unit_price`, and `total_cents` becomes `total`, in [`V1_CURRENCY`].
pub fn order_placed_v1(payload: Value) -> Result<Value, String> {
    let v1: OrderPlacedV1 = read_as(payload)?;
    let lines: Vec<Value> = v1
        .lines
        .into_iter()
        .map(|line| {
            with_fields(
                line.other,
                [
                    ("product_id", json!(line.product_id)),
                    ("quantity", json!(line.quantity)),
                    ("unit_price", json!(usd(line.unit_price_cents))),
                ],
            )
        })
        .collect();
    Ok(with_fields(
        v1.other,
        [
            ("order_id", json!(v1.order_id)),
            ("lines", Value::Array(lines)),
            ("total", json!(usd(v1.total_cents))),
        ],
    ))
}

fn usd(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: V1_CURRENCY.to_owned(),
    }
}
