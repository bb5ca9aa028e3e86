//! What product-service does when order-service's events arrive. Driven by an
//! `event_store::consumer::Consumer`, which records each event in the inbox and calls the
//! reactions in the same transaction, so each runs once per event in effect.

pub mod stock_reservation;

pub use stock_reservation::StockReservation;
