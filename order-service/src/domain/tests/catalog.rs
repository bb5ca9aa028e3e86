use uuid::Uuid;

use super::usd;

use crate::domain::catalog::{evolve, CatalogEntry};
use crate::domain::product_events::{
    PriceChanged, ProductCreated, ProductEvent, ProductRestocked, ReservationConfirmed,
    StockReleased, StockReserved,
};

fn created(product_id: Uuid, stock: i64) -> ProductEvent {
    ProductCreated {
        product_id,
        name: "Widget".into(),
        price: usd(100),
        initial_stock: stock,
    }
    .into()
}

fn fold(events: &[ProductEvent]) -> Option<CatalogEntry> {
    events.iter().fold(None, evolve)
}

#[test]
fn an_entry_follows_price_and_stock() {
    let id = Uuid::new_v4();
    let mut events = vec![
        created(id, 3),
        PriceChanged {
            product_id: id,
            price: usd(120),
        }
        .into(),
        ProductRestocked {
            product_id: id,
            quantity: 2,
        }
        .into(),
        StockReserved {
            product_id: id,
            quantity: 5,
        }
        .into(),
    ];
    let sold_out = fold(&events).unwrap();
    assert_eq!(
        sold_out,
        CatalogEntry {
            product_id: id,
            name: "Widget".into(),
            price_cents: 120,
            currency: "USD".into(),
            stock_available: 0,
            available: false,
        }
    );

    events.push(
        StockReleased {
            product_id: id,
            quantity: 2,
        }
        .into(),
    );
    let back = fold(&events).unwrap();
    assert_eq!((back.stock_available, back.available), (2, true));
}

#[test]
fn a_product_created_without_stock_is_unavailable() {
    let entry = fold(&[created(Uuid::new_v4(), 0)]).unwrap();
    assert!(!entry.available);
}

#[test]
fn events_of_other_products_and_reservations_change_nothing() {
    let (id, other) = (Uuid::new_v4(), Uuid::new_v4());
    let before = fold(&[created(id, 3)]);
    let unrelated: [ProductEvent; 3] = [
        created(other, 9),
        StockReserved {
            product_id: other,
            quantity: 1,
        }
        .into(),
        ReservationConfirmed {
            order_id: Uuid::new_v4(),
        }
        .into(),
    ];
    for event in &unrelated {
        assert_eq!(evolve(before.clone(), event), before, "{event:?}");
    }
}

#[test]
fn stock_events_before_the_product_exists_are_ignored() {
    let id = Uuid::new_v4();
    let early = ProductRestocked {
        product_id: id,
        quantity: 2,
    };
    assert_eq!(fold(&[early.into()]), None);
}
