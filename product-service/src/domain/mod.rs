//! The pure core of product-service: commands in, events out, state folded from events. No IO.
//!
//! - [`product`]: one product's catalogue data and stock (stream `product-<id>`).
//! - [`reservation`]: one order's stock reservation (stream `reservation-<order_id>`) and the
//!   saga decisions that reserve or release stock across several products at once.
//! - [`events`]: the events this service writes and their stable wire names.
//! - [`order_events`]: the tolerant view of order-service's events it reacts to.
//! - [`upcast`]: the steps from every old event version this service reads to today's.

pub mod commands;
pub mod error;
pub mod events;
pub mod order_events;
pub mod product;
pub mod reservation;
pub mod upcast;

use event_store::wire::WireEvent;

#[cfg(test)]
mod tests;

/// Every event type name this service writes.
pub const EVENT_TYPES: &[&str] = &[
    "ProductCreated",
    "PriceChanged",
    "ProductRestocked",
    "StockReserved",
    "StockReleased",
    "ReservationConfirmed",
    "ReservationRejected",
    "ReservationReleased",
];

/// Every event type name of order-service that this service reads.
pub const CONSUMED_EVENT_TYPES: &[&str] = <order_events::OrderEvent as WireEvent>::TYPES;
