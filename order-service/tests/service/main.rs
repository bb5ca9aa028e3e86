//! order-service end to end within the crate: real Postgres, real NATS (JetStream), the app on a
//! free port. product-service is played by publishing its events by hand.
//!
//! `handlers` runs the projections and the saga reaction directly on a database, without NATS.
//! `replay` rebuilds the projections, online, through the library, the CLI and `/admin`.

// Its helpers unwrap too, and clippy.toml's allow-unwrap-in-tests covers test functions only.
#![allow(clippy::unwrap_used)]

mod bad_input;
mod catalog;
mod contracts;
mod handlers;
mod health;
mod idempotency;
mod observability;
mod orders;
mod replay;
mod saga;
mod support;
mod versions;
