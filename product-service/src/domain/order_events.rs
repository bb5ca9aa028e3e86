//! product-service's own reading of the order-service events it reacts to. Only the fields it
//! needs; unknown fields and unknown event types are ignored, so order-service can evolve freely.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use event_store::wire_events;

use super::upcast;

wire_events! {
    /// The order events product-service consumes, at the versions order-service writes.
    OrderEvent { OrderPlaced = 2 [upcast::order_placed_v1], OrderCancelled }
}

/// An order was placed and waits for its stock. Version 2 (prices carry a currency), which
/// changed no field read here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub lines: Vec<OrderedLine>,
}

/// One line of a placed order, as far as stock is concerned.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderedLine {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// An order was cancelled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct OrderCancelled {
    pub order_id: Uuid,
}

impl OrderPlaced {
    /// The lines as `(product_id, quantity)`, the shape `reservation::reserve_order` takes.
    pub fn quantities(&self) -> Vec<(Uuid, i64)> {
        self.lines
            .iter()
            .map(|line| (line.product_id, line.quantity))
            .collect()
    }
}

impl OrderEvent {
    /// The order the event is about.
    pub fn order_id(&self) -> Uuid {
        match self {
            Self::OrderPlaced(e) => e.order_id,
            Self::OrderCancelled(e) => e.order_id,
        }
    }
}
