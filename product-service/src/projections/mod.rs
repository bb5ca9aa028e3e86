//! Read models built from this service's own events, each driven by an
//! `event_store::projection::Projector` that applies an event and its checkpoint in one
//! transaction.

pub mod products;
