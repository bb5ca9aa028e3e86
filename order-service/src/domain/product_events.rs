//! order-service's own reading of the product-service events it consumes. Only the fields it
//! needs; unknown fields and unknown event types are ignored, so product-service can evolve
//! freely.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use event_store::wire_events;

use super::events::Money;
use super::upcast;

wire_events! {
    /// The product-service events order-service consumes.
    ProductEvent {
        ProductCreated = 2 [upcast::product_created_v1],
        PriceChanged = 2 [upcast::price_changed_v1],
        ProductRestocked,
        StockReserved,
        StockReleased,
        ReservationConfirmed,
        ReservationRejected,
        ReservationReleased,
    }
}

impl ProductEvent {
    /// The product a catalogue event is about; `None` for reservation events, which are about an
    /// order.
    pub fn product_id(&self) -> Option<Uuid> {
        match self {
            Self::ProductCreated(e) => Some(e.product_id),
            Self::PriceChanged(e) => Some(e.product_id),
            Self::ProductRestocked(e) => Some(e.product_id),
            Self::StockReserved(e) => Some(e.product_id),
            Self::StockReleased(e) => Some(e.product_id),
            Self::ReservationConfirmed(_)
            | Self::ReservationRejected(_)
            | Self::ReservationReleased(_) => None,
        }
    }
}

/// A product was added to the catalogue (version 2: the price carries its currency).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ProductCreated {
    pub product_id: Uuid,
    pub name: String,
    pub price: Money,
    pub initial_stock: i64,
}

/// A product's price changed (version 2), in the product's currency.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct PriceChanged {
    pub product_id: Uuid,
    pub price: Money,
}

/// Stock was added to a product.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ProductRestocked {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// Stock of a product was taken by an order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct StockReserved {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// Stock of a product was given back by a cancelled order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct StockReleased {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// Every line of an order was reserved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ReservationConfirmed {
    pub order_id: Uuid,
}

/// Nothing was reserved for an order; `product_id` names the line that failed, if any.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ReservationRejected {
    pub order_id: Uuid,
    pub reason: String,
    pub product_id: Option<Uuid>,
}

/// A cancelled order's stock was given back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ReservationReleased {
    pub order_id: Uuid,
}
