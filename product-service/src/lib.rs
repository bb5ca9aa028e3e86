//! product-service: the product catalogue, its stock, and the stock reservations that answer
//! order-service's orders.
//!
//! - [`domain`]: pure decisions and state (products, reservations), the wire format of the events
//!   this service writes, and a tolerant view of the order events it reacts to.
//! - [`api`]: the HTTP API. Commands go through `event_store::aggregate::Commands` (load,
//!   decide, append with the loaded version, retry on conflict); reads come from the read model.
//! - [`projections`]: the `products` read model, updated inline: in the transaction of every
//!   append to a product stream, whether a command or a reaction appended.
//! - [`reactions`]: order-service's `OrderPlaced`/`OrderCancelled`, received through a JetStream
//!   `Consumer` and its inbox, reserve and release stock atomically across products.
//! - [`replay`]: rebuilds `products` from the store, online (the `replay` command and
//!   `/admin/projections`).
//! - [`app`]: wiring and graceful stop; [`config`].
//!
//! Data flow: HTTP command -> event store (the outbox) -> relay -> JetStream
//! `<ns>.product.events.*` -> order-service; `products` changed in the append's own
//! transaction. Order events arrive on `<ns>.order.events.*` -> consumer -> stock reservation ->
//! event store -> relay -> order-service learns the outcome.

pub mod api;
pub mod app;
pub mod config;
pub mod domain;
pub mod projections;
pub mod reactions;
pub mod replay;

pub use app::{build, Application};
pub use config::Config;
