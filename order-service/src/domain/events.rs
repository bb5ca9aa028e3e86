//! The events order-service writes. Field names are part of the wire contract with
//! product-service; add fields freely, never rename or remove them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use event_store::wire_events;

wire_events! {
    /// Events of one order stream, `order-<id>`.
    OrderEvent { OrderPlaced, OrderConfirmed, OrderRejected, OrderCancelled }
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

/// One line of an order, priced from the catalogue when the order was placed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// An order was placed and waits for its stock.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    pub total_cents: i64,
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
