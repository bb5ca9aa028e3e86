//! The events product-service writes. Field names are part of the wire contract with
//! order-service: adding a field is free; renaming, removing or reshaping one is a new schema
//! version of its type, with an upcast step from the old one in [`super::upcast`] and in every
//! consumer's view (docs/adr/0007-evolving-events.md), and a golden fixture of every version
//! in `tests/fixtures/events/`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use event_store::wire::{DecodeError, WireEvent};
use event_store::wire_events;

use super::upcast;

wire_events! {
    /// Events of one product stream, `product-<id>`.
    ProductEvent {
        ProductCreated = 2 [upcast::product_created_v1],
        PriceChanged = 2 [upcast::price_changed_v1],
        ProductRestocked,
        StockReserved,
        StockReleased,
    }
}

wire_events! {
    /// Events of one order's reservation stream, `reservation-<order_id>`.
    ReservationEvent { ReservationConfirmed, ReservationRejected, ReservationReleased }
}

impl ProductEvent {
    /// The product this event belongs to.
    pub fn product_id(&self) -> Uuid {
        match self {
            Self::ProductCreated(e) => e.product_id,
            Self::PriceChanged(e) => e.product_id,
            Self::ProductRestocked(e) => e.product_id,
            Self::StockReserved(e) => e.product_id,
            Self::StockReleased(e) => e.product_id,
        }
    }
}

/// Any event this service writes, for readers of the whole store (projections, the relay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProductServiceEvent {
    Product(ProductEvent),
    Reservation(ReservationEvent),
}

impl ProductServiceEvent {
    /// The stable type name stored beside the payload.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Product(e) => e.event_type(),
            Self::Reservation(e) => e.event_type(),
        }
    }

    /// The payload alone, with no type tag.
    pub fn payload(&self) -> serde_json::Value {
        match self {
            Self::Product(e) => e.payload(),
            Self::Reservation(e) => e.payload(),
        }
    }

    /// Decodes a stored event of any version; `Ok(None)` for an unknown type name.
    pub fn from_stored(
        event_type: &str,
        version: i32,
        payload: &serde_json::Value,
    ) -> Result<Option<Self>, DecodeError> {
        if let Some(e) = ProductEvent::from_stored(event_type, version, payload)? {
            return Ok(Some(Self::Product(e)));
        }
        Ok(ReservationEvent::from_stored(event_type, version, payload)?.map(Self::Reservation))
    }
}

/// An amount of money: minor units (cents) of an ISO 4217 currency.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct Money {
    pub amount_minor: i64,
    /// Three upper-case letters, such as `USD`.
    pub currency: String,
}

/// A product was added to the catalogue. Version 2; version 1 had `price_cents`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ProductCreated {
    pub product_id: Uuid,
    pub name: String,
    pub price: Money,
    pub initial_stock: i64,
}

/// A product's price changed; the currency stays the product's. Version 2; version 1 had
/// `old_price_cents` and `price_cents`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct PriceChanged {
    pub product_id: Uuid,
    pub old_price: Money,
    pub price: Money,
}

/// Stock was added to a product.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ProductRestocked {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// Stock moved from available to reserved for an order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct StockReserved {
    pub product_id: Uuid,
    pub order_id: Uuid,
    pub quantity: i64,
}

/// An order's reserved stock went back to available.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct StockReleased {
    pub product_id: Uuid,
    pub order_id: Uuid,
    pub quantity: i64,
}

/// One product's share of a reservation; lines of the same product are summed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ReservedLine {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// All lines of an order were reserved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ReservationConfirmed {
    pub order_id: Uuid,
    pub lines: Vec<ReservedLine>,
}

/// Nothing was reserved for an order. `product_id` names the first line that failed; it is
/// `None` when the order was cancelled before it could be reserved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ReservationRejected {
    pub order_id: Uuid,
    pub product_id: Option<Uuid>,
    pub reason: String,
    pub requested: i64,
    pub available: i64,
}

/// A cancelled order's reservation was given back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, ToSchema)]
pub struct ReservationReleased {
    pub order_id: Uuid,
    pub lines: Vec<ReservedLine>,
}
