use event_store::wire::WireEvent as _;
use serde_json::json;
use uuid::Uuid;

use crate::domain::events::{
    PriceChanged, ProductCreated, ProductEvent, ProductRestocked, ProductServiceEvent,
    ReservationConfirmed, ReservationEvent, ReservationRejected, ReservationReleased, ReservedLine,
    StockReleased, StockReserved,
};
use crate::domain::order_events::{OrderCancelled, OrderEvent, OrderPlaced, OrderedLine};
use crate::domain::{CONSUMED_EVENT_TYPES, EVENT_TYPES};

use super::usd;

/// One event of every type this service writes, in `EVENT_TYPES` order.
fn one_of_each() -> Vec<ProductServiceEvent> {
    let (p, o) = (Uuid::new_v4(), Uuid::new_v4());
    let lines = vec![ReservedLine {
        product_id: p,
        quantity: 2,
    }];
    let products: Vec<ProductEvent> = vec![
        ProductCreated {
            product_id: p,
            name: "Widget".into(),
            price: usd(100),
            initial_stock: 3,
        }
        .into(),
        PriceChanged {
            product_id: p,
            old_price: usd(100),
            price: usd(90),
        }
        .into(),
        ProductRestocked {
            product_id: p,
            quantity: 4,
        }
        .into(),
        StockReserved {
            product_id: p,
            order_id: o,
            quantity: 2,
        }
        .into(),
        StockReleased {
            product_id: p,
            order_id: o,
            quantity: 2,
        }
        .into(),
    ];
    let reservations: Vec<ReservationEvent> = vec![
        ReservationConfirmed {
            order_id: o,
            lines: lines.clone(),
        }
        .into(),
        ReservationRejected {
            order_id: o,
            product_id: Some(p),
            reason: "unknown product".into(),
            requested: 2,
            available: 0,
        }
        .into(),
        ReservationReleased { order_id: o, lines }.into(),
    ];
    let products = products.into_iter().map(ProductServiceEvent::Product);
    products
        .chain(
            reservations
                .into_iter()
                .map(ProductServiceEvent::Reservation),
        )
        .collect()
}

#[test]
fn every_event_survives_a_round_trip_through_the_store() {
    for event in one_of_each() {
        let (event_type, payload) = (event.event_type(), event.payload());
        let version = match &event {
            ProductServiceEvent::Product(e) => e.schema_version(),
            ProductServiceEvent::Reservation(e) => e.schema_version(),
        };
        let decoded = ProductServiceEvent::from_stored(event_type, version, &payload).unwrap();
        assert_eq!(decoded, Some(event.clone()), "{event_type}");
        let narrow = match &event {
            ProductServiceEvent::Product(e) => {
                ProductEvent::from_stored(event_type, version, &payload).unwrap() == Some(e.clone())
            }
            ProductServiceEvent::Reservation(e) => {
                ReservationEvent::from_stored(event_type, version, &payload).unwrap()
                    == Some(e.clone())
            }
        };
        assert!(narrow, "{event_type}");
    }
}

#[test]
fn event_types_lists_every_event_written() {
    let written: Vec<_> = one_of_each().iter().map(|e| e.event_type()).collect();
    assert_eq!(written, EVENT_TYPES);
    let declared = [ProductEvent::TYPES, ReservationEvent::TYPES].concat();
    assert_eq!(declared, EVENT_TYPES);
}

#[test]
fn the_payload_carries_no_type_tag() {
    let p = Uuid::new_v4();
    let event = ProductEvent::from(ProductRestocked {
        product_id: p,
        quantity: 4,
    });
    assert_eq!(event.payload(), json!({ "product_id": p, "quantity": 4 }));
}

#[test]
fn an_unknown_event_type_is_skipped() {
    let payload = json!({ "product_id": Uuid::new_v4() });
    assert_eq!(
        ProductServiceEvent::from_stored("ProductDiscontinued", 1, &payload).unwrap(),
        None
    );
    assert_eq!(
        ProductEvent::from_stored("ReservationReleased", 1, &payload).unwrap(),
        None
    );
    assert_eq!(
        OrderEvent::from_stored("OrderConfirmed", 1, &payload).unwrap(),
        None
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let p = Uuid::new_v4();
    let payload = json!({ "product_id": p, "quantity": 4, "warehouse": "north" });
    let decoded = ProductEvent::from_stored("ProductRestocked", 1, &payload).unwrap();
    let expected = ProductRestocked {
        product_id: p,
        quantity: 4,
    };
    assert_eq!(decoded, Some(expected.into()));
}

#[test]
fn a_known_type_with_a_broken_payload_is_an_error() {
    let payload = json!({ "product_id": "not-a-uuid", "quantity": 4 });
    assert!(ProductEvent::from_stored("ProductRestocked", 1, &payload).is_err());
}

#[test]
fn order_events_are_read_as_order_service_writes_them() {
    let (o, p) = (Uuid::new_v4(), Uuid::new_v4());
    let placed = json!({
        "order_id": o,
        "customer_id": "alice",
        "lines": [{ "product_id": p, "quantity": 2, "unit_price_cents": 150 }],
        "total_cents": 300,
    });
    let expected = OrderPlaced {
        order_id: o,
        lines: vec![OrderedLine {
            product_id: p,
            quantity: 2,
        }],
    };
    let decoded = OrderEvent::from_stored("OrderPlaced", 1, &placed).unwrap();
    assert_eq!(decoded, Some(expected.clone().into()));
    assert_eq!(expected.quantities(), vec![(p, 2)]);

    let cancelled =
        OrderEvent::from_stored("OrderCancelled", 1, &json!({ "order_id": o })).unwrap();
    assert_eq!(cancelled, Some(OrderCancelled { order_id: o }.into()));
    assert_eq!(CONSUMED_EVENT_TYPES, ["OrderPlaced", "OrderCancelled"]);
}

#[test]
fn golden_fixtures_of_every_version_read_as_today() {
    use event_store::testing::{EventFixtures, Reader};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let checked = EventFixtures::open(dir)
        .check::<ProductEvent>(Reader::Writer)
        .check::<ReservationEvent>(Reader::Writer)
        .check::<OrderEvent>(Reader::View)
        .finish();
    assert_eq!(checked, 13);
}

#[test]
fn version_1_prices_read_as_usd() {
    let p = Uuid::new_v4();
    let v1 = json!({ "product_id": p, "old_price_cents": 100, "price_cents": 90 });
    let decoded = ProductEvent::from_stored("PriceChanged", 1, &v1).unwrap();
    let expected = PriceChanged {
        product_id: p,
        old_price: usd(100),
        price: usd(90),
    };
    assert_eq!(decoded, Some(expected.into()));
    // A version-1 payload that lacks its price can never be read.
    let broken = json!({ "product_id": p, "price_cents": 90 });
    let err = ProductEvent::from_stored("PriceChanged", 1, &broken).unwrap_err();
    assert!(!err.is_too_new(), "{err}");
    assert!(err.to_string().contains("old_price_cents"), "{err}");
}
