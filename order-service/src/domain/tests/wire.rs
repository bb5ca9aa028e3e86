use event_store::wire::WireEvent as _;
use serde_json::json;
use uuid::Uuid;

use super::{line, usd};
use crate::domain::events::{
    OrderCancelled, OrderConfirmed, OrderEvent, OrderPlaced, OrderRejected,
};
use crate::domain::product_events::{
    PriceChanged, ProductCreated, ProductEvent, ProductRestocked, ReservationConfirmed,
    ReservationRejected, ReservationReleased, StockReleased, StockReserved,
};
use crate::domain::{CONSUMED_EVENT_TYPES, EVENT_TYPES};

/// One event of every type this service writes, in `EVENT_TYPES` order.
fn one_of_each() -> Vec<OrderEvent> {
    let o = Uuid::new_v4();
    vec![
        OrderPlaced {
            order_id: o,
            customer_id: "alice".into(),
            lines: vec![line(2, 150)],
            total: usd(300),
        }
        .into(),
        OrderConfirmed { order_id: o }.into(),
        OrderRejected {
            order_id: o,
            reason: "no stock".into(),
            product_id: Some(Uuid::new_v4()),
        }
        .into(),
        OrderCancelled { order_id: o }.into(),
    ]
}

#[test]
fn every_event_survives_a_round_trip_through_the_store() {
    for event in one_of_each() {
        let decoded =
            OrderEvent::from_stored(event.event_type(), event.schema_version(), &event.payload())
                .unwrap();
        assert_eq!(decoded, Some(event));
    }
}

#[test]
fn event_types_lists_every_event_written() {
    let written: Vec<_> = one_of_each().iter().map(OrderEvent::event_type).collect();
    assert_eq!(written, EVENT_TYPES);
}

#[test]
fn the_payload_is_the_bare_struct() {
    let (o, p) = (Uuid::new_v4(), Uuid::new_v4());
    let event = OrderEvent::from(OrderPlaced {
        order_id: o,
        customer_id: "alice".into(),
        lines: vec![crate::domain::events::OrderLine {
            product_id: p,
            quantity: 2,
            unit_price: usd(150),
        }],
        total: usd(300),
    });
    let price = json!({ "amount_minor": 150, "currency": "USD" });
    let expected = json!({
        "order_id": o,
        "customer_id": "alice",
        "lines": [{ "product_id": p, "quantity": 2, "unit_price": price }],
        "total": { "amount_minor": 300, "currency": "USD" },
    });
    assert_eq!(event.payload(), expected);
}

#[test]
fn an_unknown_event_type_is_skipped() {
    let payload = json!({ "order_id": Uuid::new_v4() });
    assert_eq!(
        OrderEvent::from_stored("OrderShipped", 1, &payload).unwrap(),
        None
    );
    assert_eq!(
        ProductEvent::from_stored("ProductDiscontinued", 1, &payload).unwrap(),
        None
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let o = Uuid::new_v4();
    let payload = json!({ "order_id": o, "cancelled_by": "support" });
    let decoded = OrderEvent::from_stored("OrderCancelled", 1, &payload).unwrap();
    assert_eq!(decoded, Some(OrderCancelled { order_id: o }.into()));
}

#[test]
fn a_known_type_with_a_broken_payload_is_an_error() {
    assert!(OrderEvent::from_stored("OrderConfirmed", 1, &json!({ "order": 1 })).is_err());
}

/// Payloads exactly as product-service wrote them at version 1, extra fields included.
#[test]
fn product_events_are_read_as_product_service_wrote_them_at_version_1() {
    let (p, o) = (Uuid::new_v4(), Uuid::new_v4());
    let lines = json!([{ "product_id": p, "quantity": 2 }]);
    let cases: Vec<(&str, serde_json::Value, ProductEvent)> = vec![
        (
            "ProductCreated",
            json!({ "product_id": p, "name": "Widget", "price_cents": 100, "initial_stock": 3 }),
            ProductCreated {
                product_id: p,
                name: "Widget".into(),
                price: usd(100),
                initial_stock: 3,
            }
            .into(),
        ),
        (
            "PriceChanged",
            json!({ "product_id": p, "old_price_cents": 100, "price_cents": 90 }),
            PriceChanged {
                product_id: p,
                price: usd(90),
            }
            .into(),
        ),
        (
            "ProductRestocked",
            json!({ "product_id": p, "quantity": 4 }),
            ProductRestocked {
                product_id: p,
                quantity: 4,
            }
            .into(),
        ),
        (
            "StockReserved",
            json!({ "product_id": p, "order_id": o, "quantity": 2 }),
            StockReserved {
                product_id: p,
                quantity: 2,
            }
            .into(),
        ),
        (
            "StockReleased",
            json!({ "product_id": p, "order_id": o, "quantity": 2 }),
            StockReleased {
                product_id: p,
                quantity: 2,
            }
            .into(),
        ),
        (
            "ReservationConfirmed",
            json!({ "order_id": o, "lines": lines }),
            ReservationConfirmed { order_id: o }.into(),
        ),
        (
            "ReservationRejected",
            json!({ "order_id": o, "product_id": p, "reason": "no stock", "requested": 3, "available": 1 }),
            ReservationRejected {
                order_id: o,
                reason: "no stock".into(),
                product_id: Some(p),
            }
            .into(),
        ),
        (
            "ReservationReleased",
            json!({ "order_id": o, "lines": lines }),
            ReservationReleased { order_id: o }.into(),
        ),
    ];
    let names: Vec<_> = cases.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(names, CONSUMED_EVENT_TYPES);
    for (name, payload, expected) in cases {
        let decoded = ProductEvent::from_stored(name, 1, &payload).unwrap();
        assert_eq!(decoded.as_ref(), Some(&expected), "{name}");
        assert_eq!(expected.event_type(), name);
    }
}

#[test]
fn a_rejection_without_a_product_is_read() {
    let o = Uuid::new_v4();
    let payload = json!({
        "order_id": o,
        "product_id": null,
        "reason": "order cancelled before reservation",
        "requested": 0,
        "available": 0,
    });
    let decoded = ProductEvent::from_stored("ReservationRejected", 1, &payload).unwrap();
    let expected = ReservationRejected {
        order_id: o,
        reason: "order cancelled before reservation".into(),
        product_id: None,
    };
    assert_eq!(decoded, Some(expected.into()));
}

#[test]
fn golden_fixtures_of_every_version_read_as_today() {
    use event_store::testing::{EventFixtures, Reader};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let checked = EventFixtures::open(dir)
        .check::<OrderEvent>(Reader::Writer)
        .check::<ProductEvent>(Reader::View)
        .finish();
    assert_eq!(checked, 15);
}

#[test]
fn version_1_orders_read_in_usd_and_a_broken_one_never_reads() {
    let (o, p) = (Uuid::new_v4(), Uuid::new_v4());
    let v1 = json!({
        "order_id": o,
        "customer_id": "alice",
        "lines": [{ "product_id": p, "quantity": 2, "unit_price_cents": 150 }],
        "total_cents": 300,
    });
    let Some(OrderEvent::OrderPlaced(placed)) =
        OrderEvent::from_stored("OrderPlaced", 1, &v1).unwrap()
    else {
        panic!("OrderPlaced expected");
    };
    assert_eq!(
        (placed.lines[0].unit_price.clone(), placed.total),
        (usd(150), usd(300))
    );
    let broken = json!({ "order_id": o, "customer_id": "alice", "lines": [], "total": 0 });
    let err = OrderEvent::from_stored("OrderPlaced", 1, &broken).unwrap_err();
    assert!(!err.is_too_new());
    assert!(err.to_string().contains("total_cents"), "{err}");
}
