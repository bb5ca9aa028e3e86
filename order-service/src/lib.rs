//! order-service: customers' orders and the order side of the stock reservation saga.
//!
//! - [`domain`]: pure decisions and state (orders), the wire format of the events this service
//!   writes, a tolerant view of product-service's events, and the catalogue folded from them.
//! - [`api`]: the HTTP API (actix-web), its errors and its OpenAPI document.
//! - [`projections`]: read models: `orders` (own events, updated inline in the appending
//!   transaction) and `catalog` (product-service's, updated by the consumer).
//! - [`reactions`]: the saga: a reservation's outcome confirms or rejects the order.
//! - [`replay`]: rebuilds the projections from the store and the inbox, online (the `replay`
//!   command and `/admin/projections`).
//! - [`audit`]: the catalogue against product-service's own records: C, the share that
//!   agrees, and why the rest do not (the `audit` command and `/admin/audit`).
//! - [`app`], [`config`]: wiring (on `service_kit::service`), configuration,
//!   logging.
//!
//! Data flow: `POST /orders` prices the lines from the local catalogue and appends
//! `OrderPlaced` to the store, and `orders` in the same transaction -> the relay publishes it
//! to `<ns>.order.events.*` -> product-service reserves stock and publishes
//! `ReservationConfirmed`/`ReservationRejected` (and stock events) on `<ns>.product.events.*`
//! -> the consumer records each in the inbox and, in the same transaction, updates the
//! catalogue and confirms or rejects the order (a new event, published by the relay in turn).

pub mod api;
pub mod app;
pub mod audit;
pub mod config;
pub mod domain;
pub mod projections;
pub mod reactions;
pub mod replay;

pub use app::{build, Application};
pub use config::Config;
