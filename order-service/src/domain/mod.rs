//! The pure core of order-service: commands in, events out, state folded from events. No IO.
//!
//! - [`order`]: one order and its status (stream `order-<id>`).
//! - [`events`]: the events this service writes and their stable wire names.
//! - [`product_events`]: the tolerant view of product-service's events.
//! - [`upcast`]: the steps from every old event version this service reads to today's.
//! - [`catalog`]: one product as order-service sees it, folded from that view; orders take
//!   their prices from it.

pub mod catalog;
pub mod commands;
pub mod error;
pub mod events;
pub mod order;
pub mod product_events;
pub mod upcast;

use event_store::wire::WireEvent;

#[cfg(test)]
mod tests;

/// Every event type name this service writes.
pub const EVENT_TYPES: &[&str] = <events::OrderEvent as WireEvent>::TYPES;

/// Every event type name of product-service that this service reads.
pub const CONSUMED_EVENT_TYPES: &[&str] = <product_events::ProductEvent as WireEvent>::TYPES;
