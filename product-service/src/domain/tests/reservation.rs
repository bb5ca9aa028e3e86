use std::collections::HashMap;

use uuid::Uuid;

use super::{created, given, reserved};
use crate::domain::events::{
    ProductEvent, ReservationConfirmed, ReservationEvent, ReservationRejected, ReservationReleased,
    ReservedLine, StockReleased,
};
use crate::domain::product::{self, ProductState};
use crate::domain::reservation::{
    evolve, release_order, reserve_order, stream_id, ReservationState, SagaDecision,
    CANCELLED_BEFORE_RESERVATION,
};

/// A catalogue of products, each created with the given stock.
fn products(stocks: &[(Uuid, i64)]) -> HashMap<Uuid, ProductState> {
    stocks
        .iter()
        .map(|&(id, stock)| (id, given(&[created(id, 100, stock)]).0))
        .collect()
}

fn line(product_id: Uuid, quantity: i64) -> ReservedLine {
    ReservedLine {
        product_id,
        quantity,
    }
}

fn rejected(
    order_id: Uuid,
    product_id: Uuid,
    reason: String,
    requested: i64,
    available: i64,
) -> SagaDecision {
    SagaDecision {
        reservation: vec![ReservationRejected {
            order_id,
            product_id: Some(product_id),
            reason,
            requested,
            available,
        }
        .into()],
        products: vec![],
    }
}

#[test]
fn an_order_in_stock_is_confirmed_and_reserves_every_product() {
    let (order, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let catalogue = products(&[(a, 5), (b, 1)]);
    let decision = reserve_order(
        &ReservationState::None,
        order,
        &[(a, 2), (b, 1)],
        &catalogue,
    );
    let expected = SagaDecision {
        reservation: vec![ReservationConfirmed {
            order_id: order,
            lines: vec![line(a, 2), line(b, 1)],
        }
        .into()],
        products: vec![(a, reserved(a, order, 2)), (b, reserved(b, order, 1))],
    };
    assert_eq!(decision, expected);
}

#[test]
fn lines_of_the_same_product_are_summed_before_checking_stock() {
    let (order, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let catalogue = products(&[(a, 5), (b, 5)]);
    let decision = reserve_order(
        &ReservationState::None,
        order,
        &[(a, 2), (b, 1), (a, 3)],
        &catalogue,
    );
    let expected = SagaDecision {
        reservation: vec![ReservationConfirmed {
            order_id: order,
            lines: vec![line(a, 5), line(b, 1)],
        }
        .into()],
        products: vec![(a, reserved(a, order, 5)), (b, reserved(b, order, 1))],
    };
    assert_eq!(decision, expected);

    let decision = reserve_order(
        &ReservationState::None,
        order,
        &[(a, 3), (a, 3)],
        &catalogue,
    );
    let reason = format!("insufficient stock for product {a}: requested 6, available 5");
    assert_eq!(decision, rejected(order, a, reason, 6, 5));
}

#[test]
fn an_order_beyond_stock_reserves_nothing_and_names_the_product() {
    let (order, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let catalogue = products(&[(a, 5), (b, 1)]);
    let decision = reserve_order(
        &ReservationState::None,
        order,
        &[(a, 2), (b, 3)],
        &catalogue,
    );
    let reason = format!("insufficient stock for product {b}: requested 3, available 1");
    assert_eq!(decision, rejected(order, b, reason, 3, 1));
}

#[test]
fn the_rejection_names_the_first_failing_product_in_line_order() {
    let (order, a, b, unknown) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let catalogue = products(&[(a, 5), (b, 0)]);
    let lines = [(a, 1), (b, 1), (unknown, 1)];
    let decision = reserve_order(&ReservationState::None, order, &lines, &catalogue);
    let reason = format!("insufficient stock for product {b}: requested 1, available 0");
    assert_eq!(decision, rejected(order, b, reason, 1, 0));

    let lines = [(a, 1), (unknown, 1), (b, 1)];
    let decision = reserve_order(&ReservationState::None, order, &lines, &catalogue);
    assert_eq!(
        decision,
        rejected(order, unknown, format!("unknown product {unknown}"), 1, 0)
    );
}

#[test]
fn a_product_that_was_never_created_is_unknown() {
    let (order, ghost) = (Uuid::new_v4(), Uuid::new_v4());
    let catalogue = HashMap::from([(ghost, ProductState::default())]);
    let decision = reserve_order(&ReservationState::None, order, &[(ghost, 1)], &catalogue);
    assert_eq!(
        decision,
        rejected(order, ghost, format!("unknown product {ghost}"), 1, 0)
    );
}

#[test]
fn a_non_positive_line_is_rejected_even_when_the_sum_is_positive() {
    let (order, a) = (Uuid::new_v4(), Uuid::new_v4());
    let catalogue = products(&[(a, 5)]);
    let decision = reserve_order(
        &ReservationState::None,
        order,
        &[(a, 3), (a, -1)],
        &catalogue,
    );
    assert_eq!(
        decision,
        rejected(order, a, "invalid quantity -1".into(), -1, 0)
    );
}

#[test]
fn an_order_already_reserved_rejected_or_released_is_not_reserved_again() {
    let (order, a) = (Uuid::new_v4(), Uuid::new_v4());
    let catalogue = products(&[(a, 5)]);
    let states = [
        ReservationState::Confirmed(vec![line(a, 1)]),
        ReservationState::Rejected,
        ReservationState::Released,
    ];
    for state in states {
        let decision = reserve_order(&state, order, &[(a, 1)], &catalogue);
        assert!(decision.is_empty(), "{state:?}");
    }
}

#[test]
fn cancelling_a_confirmed_order_releases_every_reserved_line() {
    let (order, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let lines = vec![line(a, 5), line(b, 1)];
    let decision = release_order(&ReservationState::Confirmed(lines.clone()), order);
    let released = |product_id, quantity| -> ProductEvent {
        StockReleased {
            product_id,
            order_id: order,
            quantity,
        }
        .into()
    };
    let expected = SagaDecision {
        reservation: vec![ReservationReleased {
            order_id: order,
            lines,
        }
        .into()],
        products: vec![(a, released(a, 5)), (b, released(b, 1))],
    };
    assert_eq!(decision, expected);
}

#[test]
fn reserving_then_releasing_restores_every_products_stock() {
    let (order, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut catalogue = products(&[(a, 5), (b, 2)]);
    let before = catalogue.clone();
    let mut reservation = ReservationState::None;

    let mut apply = |decision: SagaDecision| {
        for event in &decision.reservation {
            reservation = evolve(std::mem::take(&mut reservation), event);
        }
        for (id, event) in &decision.products {
            let state = catalogue.remove(id).unwrap();
            catalogue.insert(*id, product::evolve(state, event));
        }
        (reservation.clone(), catalogue.clone())
    };
    let (state, held) = apply(reserve_order(
        &ReservationState::None,
        order,
        &[(a, 4), (b, 2)],
        &before,
    ));
    assert_eq!(held[&a].stock_available, 1);
    assert_eq!(held[&b].stock_reserved, 2);
    let (state, after) = apply(release_order(&state, order));
    assert_eq!(state, ReservationState::Released);
    assert_eq!(after, before);
}

#[test]
fn a_cancel_before_any_reservation_closes_the_reservation() {
    let (order, a) = (Uuid::new_v4(), Uuid::new_v4());
    let decision = release_order(&ReservationState::None, order);
    let event: ReservationEvent = ReservationRejected {
        order_id: order,
        product_id: None,
        reason: CANCELLED_BEFORE_RESERVATION.into(),
        requested: 0,
        available: 0,
    }
    .into();
    assert_eq!(decision.reservation, vec![event.clone()]);
    assert!(decision.products.is_empty());

    let state = evolve(ReservationState::None, &event);
    let late = reserve_order(&state, order, &[(a, 1)], &products(&[(a, 5)]));
    assert!(late.is_empty());
}

#[test]
fn cancelling_a_rejected_or_released_order_releases_nothing() {
    for state in [ReservationState::Rejected, ReservationState::Released] {
        assert!(release_order(&state, Uuid::new_v4()).is_empty());
    }
}

#[test]
fn a_reservation_stream_is_named_after_its_order() {
    let id = Uuid::new_v4();
    assert_eq!(stream_id(id), format!("reservation-{id}"));
}
