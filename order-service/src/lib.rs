//! order-service: customers' orders and the order side of the stock reservation saga.
//!
//! - [`domain`]: pure decisions and state (orders), the wire format of the events this service
//!   writes, a tolerant view of product-service's events, and the catalogue folded from them.

pub mod domain;
