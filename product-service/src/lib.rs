//! product-service: the product catalogue, its stock, and the stock reservations that answer
//! order-service's orders.
//!
//! - [`domain`]: pure decisions and state (products, reservations), the wire format of the events
//!   this service writes, and a tolerant view of the order events it reacts to.

pub mod domain;
