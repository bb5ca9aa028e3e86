//! One order's saga, assembled from the events in the window: every event whose payload names
//! the order (`order_id`), in time order, with how long each step took after the one before.
//! An order is found by its id or by the correlation id of any of its events.
//!
//! The choreography: order-service's `OrderPlaced`; product-service's `StockReserved` (one per
//! product) and `ReservationConfirmed`, or `ReservationRejected`; order-service's
//! `OrderConfirmed` or `OrderRejected`. A cancellation adds `OrderCancelled`, then
//! `StockReleased` and `ReservationReleased`. Event types the viewer does not know are shown
//! as they are, as steps of kind `other`.

use std::collections::HashSet;

use serde::Serialize;

use crate::event::ViewedEvent;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub event_type: String,
    pub service: &'static str,
    pub stream_id: String,
    pub stream_version: i64,
    pub correlation_id: Option<String>,
    pub time_ms: i64,
    /// Milliseconds since the step before (0 for the first).
    pub took_ms: i64,
    /// The step's place in the saga: `placed`, `stock`, `reservation`, `outcome`, `cancel`,
    /// `release` or `other`.
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Saga {
    pub order_id: String,
    /// `pending`, `confirmed`, `rejected` or `cancelled`, as far as the events seen tell.
    pub status: &'static str,
    pub steps: Vec<Step>,
    /// From the first step to the last.
    pub total_ms: i64,
    /// The steps of the saga's happy or unhappy path not seen yet (empty once it has ended).
    pub waiting_for: Vec<&'static str>,
}

/// Where an event type stands in the saga, and its rank among steps of the same instant.
fn kind(event_type: &str) -> (&'static str, u8) {
    match event_type {
        "OrderPlaced" => ("placed", 0),
        "StockReserved" => ("stock", 1),
        "ReservationConfirmed" | "ReservationRejected" => ("reservation", 2),
        "OrderConfirmed" | "OrderRejected" => ("outcome", 3),
        "OrderCancelled" => ("cancel", 4),
        "StockReleased" | "ReservationReleased" => ("release", 5),
        _ => ("other", 6),
    }
}

/// The order that `key` names: an order id itself, or the order of an event with that
/// correlation id. `None` when no event in `events` names it.
pub fn find_order<'a>(
    events: impl IntoIterator<Item = &'a ViewedEvent>,
    key: &str,
) -> Option<String> {
    let mut by_correlation = None;
    for e in events {
        let Some(order) = e.order_id.as_deref() else {
            continue;
        };
        if order == key {
            return Some(order.to_owned());
        }
        if by_correlation.is_none() && e.correlation_id.as_deref() == Some(key) {
            by_correlation = Some(order.to_owned());
        }
    }
    by_correlation
}

/// The saga of `order_id` from `events` (any order, duplicates allowed).
pub fn assemble<'a>(events: impl IntoIterator<Item = &'a ViewedEvent>, order_id: &str) -> Saga {
    let mut seen = HashSet::new();
    let mut mine: Vec<&ViewedEvent> = events
        .into_iter()
        .filter(|e| e.order_id.as_deref() == Some(order_id))
        .filter(|e| seen.insert(e.event_id.as_str()))
        .collect();
    mine.sort_by_key(|e| (e.time_ms, kind(&e.event_type).1, e.seq));
    let mut steps = Vec::with_capacity(mine.len());
    let mut previous = None;
    for e in &mine {
        steps.push(Step {
            event_type: e.event_type.clone(),
            service: e.service,
            stream_id: e.stream_id.clone(),
            stream_version: e.stream_version,
            correlation_id: e.correlation_id.clone(),
            time_ms: e.time_ms,
            took_ms: previous.map_or(0, |t| e.time_ms - t),
            kind: kind(&e.event_type).0,
        });
        previous = Some(e.time_ms);
    }
    let has = |t: &str| mine.iter().any(|e| e.event_type == t);
    let status = if has("OrderCancelled") {
        "cancelled"
    } else if has("OrderRejected") {
        "rejected"
    } else if has("OrderConfirmed") {
        "confirmed"
    } else {
        "pending"
    };
    let path: &[&'static str] = if has("ReservationRejected") || has("OrderRejected") {
        &["OrderPlaced", "ReservationRejected", "OrderRejected"]
    } else {
        &[
            "OrderPlaced",
            "StockReserved",
            "ReservationConfirmed",
            "OrderConfirmed",
        ]
    };
    let waiting_for = if status == "cancelled" {
        Vec::new()
    } else {
        path.iter().copied().filter(|t| !has(t)).collect()
    };
    Saga {
        order_id: order_id.to_owned(),
        status,
        total_ms: match (steps.first(), steps.last()) {
            (Some(first), Some(last)) => last.time_ms - first.time_ms,
            _ => 0,
        },
        steps,
        waiting_for,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::tests::event;

    fn step(id: &str, event_type: &str, service: &'static str, t: i64) -> ViewedEvent {
        let mut e = event(id, service, t);
        e.event_type = event_type.to_owned();
        e.order_id = Some("o1".to_owned());
        e.correlation_id = Some("req-1".to_owned());
        e
    }

    fn types(saga: &Saga) -> Vec<&str> {
        saga.steps.iter().map(|s| s.event_type.as_str()).collect()
    }

    #[test]
    fn a_confirmed_order_arriving_out_of_order_is_told_in_time_order_with_durations() {
        let events = [
            step("4", "OrderConfirmed", "orders", 160),
            step("2", "StockReserved", "products", 120),
            step("1", "OrderPlaced", "orders", 100),
            step("3", "ReservationConfirmed", "products", 120),
        ];
        let saga = assemble(&events, "o1");
        assert_eq!(
            types(&saga),
            [
                "OrderPlaced",
                "StockReserved",
                "ReservationConfirmed",
                "OrderConfirmed"
            ]
        );
        let took: Vec<i64> = saga.steps.iter().map(|s| s.took_ms).collect();
        assert_eq!(took, [0, 20, 0, 40]);
        assert_eq!((saga.status, saga.total_ms), ("confirmed", 60));
        assert!(saga.waiting_for.is_empty());
    }

    #[test]
    fn a_pending_order_says_what_it_waits_for() {
        let events = [step("1", "OrderPlaced", "orders", 100)];
        let saga = assemble(&events, "o1");
        assert_eq!(saga.status, "pending");
        assert_eq!(
            saga.waiting_for,
            ["StockReserved", "ReservationConfirmed", "OrderConfirmed"]
        );
    }

    #[test]
    fn a_rejected_order_follows_the_unhappy_path() {
        let events = [
            step("1", "OrderPlaced", "orders", 1),
            step("2", "ReservationRejected", "products", 2),
        ];
        let saga = assemble(&events, "o1");
        assert_eq!(
            (saga.status, saga.waiting_for.clone()),
            ("pending", vec!["OrderRejected"])
        );
        let mut events = events.to_vec();
        events.push(step("3", "OrderRejected", "orders", 3));
        let saga = assemble(&events, "o1");
        assert_eq!(saga.status, "rejected");
        assert!(saga.waiting_for.is_empty());
    }

    #[test]
    fn duplicates_count_once_and_unknown_types_and_other_orders_are_handled() {
        let mut other = step("9", "OrderPlaced", "orders", 5);
        other.order_id = Some("o2".to_owned());
        let events = [
            step("1", "OrderPlaced", "orders", 1),
            step("1", "OrderPlaced", "orders", 1),
            step("5", "OrderGiftWrapped", "orders", 3),
            step("6", "OrderCancelled", "orders", 4),
            other,
        ];
        let saga = assemble(&events, "o1");
        assert_eq!(
            types(&saga),
            ["OrderPlaced", "OrderGiftWrapped", "OrderCancelled"]
        );
        assert_eq!(saga.steps[1].kind, "other");
        assert_eq!(saga.status, "cancelled");
        assert!(saga.waiting_for.is_empty());
    }

    #[test]
    fn an_order_is_found_by_its_id_or_a_correlation_id() {
        let events = [step("1", "OrderPlaced", "orders", 1)];
        assert_eq!(find_order(&events, "o1").as_deref(), Some("o1"));
        assert_eq!(find_order(&events, "req-1").as_deref(), Some("o1"));
        assert_eq!(find_order(&events, "nothing"), None);
    }
}
