//! product-service against real Postgres and NATS: the HTTP API, bad input, and the stock
//! reservation saga driven by hand-published order events.

mod bad_input;
mod products;
mod saga;
mod support;
