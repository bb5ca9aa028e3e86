//! Read models of this service's own events, written inline: in the transaction of every
//! append to their aggregate (`event_store::read_model`), so a response and every read after
//! it agree. Rebuilt from the store by `replay`.

pub mod products;
