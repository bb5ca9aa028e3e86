use uuid::Uuid;

use super::{given, line, placed, usd};
use crate::domain::commands::OrderCommand::{self, Cancel, Confirm, PlaceOrder, Reject};
use crate::domain::error::DomainError;
use crate::domain::events::{
    OrderCancelled, OrderConfirmed, OrderEvent, OrderLine, OrderPlaced, OrderRejected,
};
use crate::domain::order::{
    evolve, stream_id, OrderState, OrderStatus, MAX_CUSTOMER_ID_CHARS, MAX_LINES, MAX_QUANTITY,
};

fn place(customer_id: &str, lines: Vec<OrderLine>) -> OrderCommand {
    PlaceOrder {
        order_id: Uuid::nil(),
        customer_id: customer_id.into(),
        lines,
    }
}

fn reject() -> OrderCommand {
    Reject {
        reason: "insufficient stock".into(),
        product_id: None,
    }
}

/// The history of an order that reached `status`.
fn history(order_id: Uuid, status: OrderStatus) -> Vec<OrderEvent> {
    let next: Option<OrderEvent> = match status {
        OrderStatus::Pending => None,
        OrderStatus::Confirmed => Some(OrderConfirmed { order_id }.into()),
        OrderStatus::Rejected => Some(
            OrderRejected {
                order_id,
                reason: "no stock".into(),
                product_id: None,
            }
            .into(),
        ),
        OrderStatus::Cancelled => Some(OrderCancelled { order_id }.into()),
    };
    std::iter::once(placed(order_id)).chain(next).collect()
}

#[test]
fn placing_an_order_totals_its_lines_and_trims_the_customer() {
    let id = Uuid::new_v4();
    let lines = vec![line(2, 150), line(1, 1000)];
    let command = PlaceOrder {
        order_id: id,
        customer_id: " alice ".into(),
        lines: lines.clone(),
    };
    let expected = OrderPlaced {
        order_id: id,
        customer_id: "alice".into(),
        lines,
        total: usd(1300),
    };
    assert_eq!(given(&[]).when(command), Ok(vec![expected.into()]));
}

#[test]
fn bad_order_input_is_refused_with_a_precise_error() {
    let (zero, negative, huge) = (line(0, 1), line(-4, 1), line(MAX_QUANTITY + 1, 1));
    let (cheap, big) = (line(1, 0), line(2, i64::MAX / 2 + 1));
    let long = "c".repeat(MAX_CUSTOMER_ID_CHARS + 1);
    let count = |count| DomainError::InvalidLineCount {
        count,
        min: 1,
        max: MAX_LINES,
    };
    let quantity = |l: &OrderLine| DomainError::InvalidQuantity {
        product_id: l.product_id,
        quantity: l.quantity,
        max: MAX_QUANTITY,
    };
    let cases = [
        (place("", vec![line(1, 1)]), DomainError::EmptyCustomerId),
        (place(" \t", vec![line(1, 1)]), DomainError::EmptyCustomerId),
        (
            place(&long, vec![line(1, 1)]),
            DomainError::CustomerIdTooLong { len: 101, max: 100 },
        ),
        (place("a", vec![]), count(0)),
        (place("a", vec![line(1, 1); MAX_LINES + 1]), count(101)),
        (place("a", vec![line(1, 1), zero.clone()]), quantity(&zero)),
        (place("a", vec![negative.clone()]), quantity(&negative)),
        (place("a", vec![huge.clone()]), quantity(&huge)),
        (
            place("a", vec![cheap.clone()]),
            DomainError::InvalidPrice {
                product_id: cheap.product_id,
                price_cents: 0,
            },
        ),
        (place("a", vec![big]), DomainError::TotalOverflow),
        (
            place("a", vec![line(1, i64::MAX), line(1, 1)]),
            DomainError::TotalOverflow,
        ),
    ];
    for (command, error) in cases {
        let result = given(&[]).when(command.clone());
        assert_eq!(result, Err(error), "{command:?}");
    }
}

#[test]
fn an_order_at_every_limit_is_accepted() {
    let customer = "é".repeat(MAX_CUSTOMER_ID_CHARS);
    let command = place(&customer, vec![line(MAX_QUANTITY, 1); MAX_LINES]);
    let events = given(&[]).when(command).unwrap();
    let OrderEvent::OrderPlaced(placed) = &events[0] else {
        panic!("expected OrderPlaced, got {events:?}");
    };
    assert_eq!(placed.total, usd(100_000_000));
}

#[test]
fn placing_an_existing_order_is_refused() {
    let id = Uuid::new_v4();
    let command = PlaceOrder {
        order_id: id,
        customer_id: "bob".into(),
        lines: vec![line(1, 1)],
    };
    let result = given(&[placed(id)]).when(command);
    assert_eq!(result, Err(DomainError::AlreadyExists { order_id: id }));
}

#[test]
fn commands_on_a_missing_order_are_refused() {
    for command in [Confirm, reject(), Cancel] {
        assert_eq!(given(&[]).when(command), Err(DomainError::OrderNotFound));
    }
}

#[test]
fn a_pending_order_is_confirmed() {
    let id = Uuid::new_v4();
    let result = given(&history(id, OrderStatus::Pending)).when(Confirm);
    assert_eq!(result, Ok(vec![OrderConfirmed { order_id: id }.into()]));
}

#[test]
fn confirming_an_order_that_is_no_longer_pending_changes_nothing() {
    let id = Uuid::new_v4();
    for status in [
        OrderStatus::Confirmed,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
    ] {
        assert_eq!(
            given(&history(id, status)).when(Confirm),
            Ok(vec![]),
            "{status}"
        );
    }
}

#[test]
fn a_pending_order_is_rejected_with_the_reason_and_product() {
    let (id, product) = (Uuid::new_v4(), Uuid::new_v4());
    let command = Reject {
        reason: "unknown product".into(),
        product_id: Some(product),
    };
    let expected = OrderRejected {
        order_id: id,
        reason: "unknown product".into(),
        product_id: Some(product),
    };
    let result = given(&history(id, OrderStatus::Pending)).when(command);
    assert_eq!(result, Ok(vec![expected.into()]));
}

#[test]
fn rejecting_a_cancelled_or_rejected_order_changes_nothing() {
    let id = Uuid::new_v4();
    for status in [OrderStatus::Rejected, OrderStatus::Cancelled] {
        assert_eq!(
            given(&history(id, status)).when(reject()),
            Ok(vec![]),
            "{status}"
        );
    }
}

#[test]
fn rejecting_a_confirmed_order_is_an_invalid_transition() {
    let result = given(&history(Uuid::new_v4(), OrderStatus::Confirmed)).when(reject());
    let expected = DomainError::InvalidTransition {
        from: OrderStatus::Confirmed,
        action: "reject",
    };
    assert_eq!(result, Err(expected));
}

#[test]
fn cancelling_depends_on_the_status() {
    let id = Uuid::new_v4();
    let cancelled = || Ok(vec![OrderCancelled { order_id: id }.into()]);
    let invalid = |from| {
        Err(DomainError::InvalidTransition {
            from,
            action: "cancel",
        })
    };
    let cases = [
        (OrderStatus::Pending, cancelled()),
        (OrderStatus::Confirmed, cancelled()),
        (OrderStatus::Rejected, invalid(OrderStatus::Rejected)),
        (OrderStatus::Cancelled, invalid(OrderStatus::Cancelled)),
    ];
    for (status, expected) in cases {
        assert_eq!(
            given(&history(id, status)).when(Cancel),
            expected,
            "{status}"
        );
    }
}

#[test]
fn an_invalid_transition_reads_as_a_sentence() {
    let error = DomainError::InvalidTransition {
        from: OrderStatus::Rejected,
        action: "cancel",
    };
    assert_eq!(error.to_string(), "cannot cancel an order that is rejected");
}

#[test]
fn an_order_folds_from_its_events() {
    let id = Uuid::new_v4();
    for status in [
        OrderStatus::Pending,
        OrderStatus::Confirmed,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
    ] {
        assert_eq!(given(&history(id, status)).0.status, Some(status));
    }
    let events = history(id, OrderStatus::Rejected);
    let OrderEvent::OrderPlaced(placed) = events[0].clone() else {
        panic!("history starts with OrderPlaced");
    };
    let expected = OrderState {
        order_id: id,
        status: Some(OrderStatus::Rejected),
        customer_id: "alice".into(),
        lines: placed.lines,
        total: usd(300),
        rejection_reason: Some("no stock".into()),
    };
    let state = given(&events).0;
    assert_eq!(state, expected);
}

#[test]
fn statuses_are_lowercase_on_the_wire() {
    let json = serde_json::to_value([
        OrderStatus::Pending,
        OrderStatus::Confirmed,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
    ])
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!(["pending", "confirmed", "rejected", "cancelled"])
    );
    let back: OrderStatus = serde_json::from_value(serde_json::json!("cancelled")).unwrap();
    assert_eq!(back, OrderStatus::Cancelled);
}

#[test]
fn an_order_stream_is_named_after_its_id() {
    let id = Uuid::new_v4();
    assert_eq!(stream_id(id), format!("order-{id}"));
    assert_eq!(evolve(OrderState::default(), &placed(id)).order_id, id);
}

#[test]
fn an_order_is_in_the_one_currency_of_its_lines() {
    let mut eur = line(1, 500);
    eur.unit_price.currency = "EUR".into();
    let mixed = place("alice", vec![line(2, 100), eur.clone()]);
    assert_eq!(
        given(&[]).when(mixed),
        Err(DomainError::MixedCurrencies {
            product_id: eur.product_id,
            currency: "EUR".into(),
            first: "USD".into(),
        })
    );
    let events = given(&[])
        .when(place("alice", vec![eur.clone(), eur]))
        .unwrap();
    let OrderEvent::OrderPlaced(placed) = &events[0] else {
        panic!("expected OrderPlaced, got {events:?}");
    };
    assert_eq!(placed.total.amount_minor, 1000);
    assert_eq!(placed.total.currency, "EUR");
}
