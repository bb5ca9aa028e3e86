//! Read models, each kept in this service's database with the position it reflects.
//!
//! - [`orders`]: this service's own order events, written inline: in the transaction of every
//!   append to an order (`event_store::read_model`).
//! - [`catalog`]: product-service's product events, applied by the consumer inside the same
//!   transaction that records them in the inbox.

pub mod catalog;
pub mod orders;
