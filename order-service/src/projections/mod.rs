//! Read models, each kept in this service's database with the position it reflects.
//!
//! - [`orders`]: this service's own order events, applied by the store's `Projector`.
//! - [`catalog`]: product-service's product events, applied by the consumer inside the same
//!   transaction that records them in the inbox.

pub mod catalog;
pub mod orders;
