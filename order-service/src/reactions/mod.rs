//! What order-service does when product-service's events arrive (besides keeping its
//! catalogue, which is a projection: see `projections::catalog`).
//!
//! - [`reservation`]: a reservation confirmed or rejected confirms or rejects the order.

pub mod reservation;
