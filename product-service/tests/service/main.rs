//! product-service against real Postgres and NATS: the HTTP API, bad input, the stock
//! reservation saga driven by hand-published order events, and replay (rebuilds).

mod bad_input;
mod contracts;
mod idempotency;
mod observability;
mod products;
mod replay;
mod saga;
mod sales;
mod snapshots;
mod support;
mod versions;
