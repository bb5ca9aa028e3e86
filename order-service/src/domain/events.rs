//! The events order-service writes. Field names are part of the wire contract with
//! product-service: adding a field is free; renaming, removing or reshaping one is a new schema
//! version of its type, with an upcast step from the old one here ([`super::upcast`]) and in
//! every consumer's view (docs/adr/0007-evolving-events.md), and a golden fixture of every
//! version in `tests/fixtures/events/`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use event_store::wire_events;

use super::upcast;

wire_events! {
    /// Events of one order stream, `order-<id>`.
    OrderEvent {
        OrderPlaced = 2 [upcast::order_placed_v1],
        OrderConfirmed,
        OrderRejected,
        OrderCancelled,
    }
}

impl OrderEvent {
    /// The order this event belongs to.
    pub fn order_id(&self) -> Uuid {
        match self {
            Self::OrderPlaced(e) => e.order_id,
            Self::OrderConfirmed(e) => e.order_id,
            Self::OrderRejected(e) => e.order_id,
            Self::OrderCancelled(e) => e.order_id,
        }
    }
}

/// An amount of money: minor units (cents) of an ISO 4217 currency.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, ToSchema)]
pub struct Money {
    pub amount_minor: i64,
    /// Three upper-case letters, such as `USD`.
    pub currency: String,
}

/// One line of an order, priced from the catalogue when the order was placed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price: Money,
}

/// An order was placed and waits for its stock. Version 2; version 1 had `unit_price_cents`
/// on its lines and `total_cents`. Every line is in the total's currency.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    pub total: Money,
}

/// Stock was reserved for every line.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderConfirmed {
    pub order_id: Uuid,
}

/// Stock could not be reserved; `product_id` names the line that failed, when there was one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderRejected {
    pub order_id: Uuid,
    pub reason: String,
    pub product_id: Option<Uuid>,
}

/// The customer cancelled the order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderCancelled {
    pub order_id: Uuid,
}
