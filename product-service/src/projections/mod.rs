//! Read models of this service's own events, rebuilt from the store by `replay`.
//!
//! - [`products`]: one row per product, written inline: in the statement or transaction of
//!   every append to a product (`event_store::read_model`), so a response and every read
//!   after it agree.
//! - [`sales`]: units reserved and released per product per day, rows across many streams,
//!   kept by a projector from its own checkpoint, a moment behind the store.

pub mod products;
pub mod sales;
