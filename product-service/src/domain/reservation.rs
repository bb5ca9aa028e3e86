//! The reservation aggregate: one stream per order, so an order is reserved at most once, and the
//! saga decisions that move stock on several products together.

use std::collections::HashMap;

use event_store::aggregate::Fold;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::ProductCommand;
use super::error::DomainError;
use super::events::{
    ProductEvent, ReservationConfirmed, ReservationEvent, ReservationRejected, ReservationReleased,
    ReservedLine, StockReleased,
};
use super::product::{self, ProductState};

/// Reason recorded when a cancellation overtakes the reservation it would undo.
pub const CANCELLED_BEFORE_RESERVATION: &str = "order cancelled before reservation";

/// The stream holding one order's reservation.
pub fn stream_id(order_id: Uuid) -> String {
    format!("reservation-{order_id}")
}

/// Where one order's reservation stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationState {
    #[default]
    None,
    Confirmed(Vec<ReservedLine>),
    Rejected,
    Released,
}

/// Applies one event.
pub fn evolve(_state: ReservationState, event: &ReservationEvent) -> ReservationState {
    match event {
        ReservationEvent::ReservationConfirmed(e) => ReservationState::Confirmed(e.lines.clone()),
        ReservationEvent::ReservationRejected(_) => ReservationState::Rejected,
        ReservationEvent::ReservationReleased(_) => ReservationState::Released,
    }
}

/// What the saga appends for one order, all in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SagaDecision {
    /// Events for the stream `stream_id(order_id)`.
    pub reservation: Vec<ReservationEvent>,
    /// Events for the stream `product::stream_id(product_id)`, at most one per product, in the
    /// order the products first appear in the order's lines.
    pub products: Vec<(Uuid, ProductEvent)>,
}

impl SagaDecision {
    /// True when there is nothing to append (the order was already handled).
    pub fn is_empty(&self) -> bool {
        self.reservation.is_empty() && self.products.is_empty()
    }
}

/// Reserves every line of a placed order, or none. `products` holds the current state of each
/// product the lines name; the caller appends with those states' versions so that a concurrent
/// change to any of them makes the append fail and the decision be taken again.
///
/// Lines of the same product are summed first. The rejection names the first product, in line
/// order, that is unknown or short of stock. An order whose reservation already exists yields
/// nothing, so a redelivered `OrderPlaced` has no effect.
pub fn reserve_order(
    reservation: &ReservationState,
    order_id: Uuid,
    lines: &[(Uuid, i64)],
    products: &HashMap<Uuid, ProductState>,
) -> SagaDecision {
    if *reservation != ReservationState::None {
        return SagaDecision::default();
    }
    let lines = match sum_lines(lines) {
        Ok(lines) => lines,
        Err(rejection) => return reject(order_id, rejection),
    };
    let unknown = ProductState::default();
    let mut reserved = Vec::with_capacity(lines.len());
    for line in &lines {
        let state = products.get(&line.product_id).unwrap_or(&unknown);
        let command = ProductCommand::ReserveStock {
            order_id,
            quantity: line.quantity,
        };
        match product::decide(state, command) {
            Ok(events) => reserved.extend(events.into_iter().map(|e| (line.product_id, e))),
            Err(error) => return reject(order_id, Rejection::new(line, state, &error)),
        }
    }
    SagaDecision {
        reservation: vec![ReservationConfirmed { order_id, lines }.into()],
        products: reserved,
    }
}

/// Gives back what a cancelled order reserved. A cancellation that arrives before any reservation
/// closes the reservation as rejected, so a late `OrderPlaced` can no longer take stock.
pub fn release_order(reservation: &ReservationState, order_id: Uuid) -> SagaDecision {
    match reservation {
        ReservationState::None => reject(
            order_id,
            Rejection {
                product_id: None,
                reason: CANCELLED_BEFORE_RESERVATION.to_owned(),
                requested: 0,
                available: 0,
            },
        ),
        // The reservation's lines are exactly what each product recorded for this order: both
        // were appended in one transaction by `reserve_order`.
        ReservationState::Confirmed(lines) => SagaDecision {
            reservation: vec![ReservationReleased {
                order_id,
                lines: lines.clone(),
            }
            .into()],
            products: lines
                .iter()
                .map(|line| {
                    let released = StockReleased {
                        product_id: line.product_id,
                        order_id,
                        quantity: line.quantity,
                    };
                    (line.product_id, released.into())
                })
                .collect(),
        },
        ReservationState::Rejected | ReservationState::Released => SagaDecision::default(),
    }
}

struct Rejection {
    product_id: Option<Uuid>,
    reason: String,
    requested: i64,
    available: i64,
}

impl Rejection {
    fn new(line: &ReservedLine, state: &ProductState, error: &DomainError) -> Self {
        let reason = match error {
            DomainError::ProductNotFound => format!("unknown product {}", line.product_id),
            other => other.to_string(),
        };
        Rejection {
            product_id: Some(line.product_id),
            reason,
            requested: line.quantity,
            available: state.stock_available,
        }
    }
}

fn reject(order_id: Uuid, rejection: Rejection) -> SagaDecision {
    SagaDecision {
        reservation: vec![ReservationRejected {
            order_id,
            product_id: rejection.product_id,
            reason: rejection.reason,
            requested: rejection.requested,
            available: rejection.available,
        }
        .into()],
        products: vec![],
    }
}

/// One line per product, in order of first appearance. Every line must be positive on its own,
/// so that a negative line cannot hide inside a positive sum.
fn sum_lines(lines: &[(Uuid, i64)]) -> Result<Vec<ReservedLine>, Rejection> {
    let mut summed: Vec<ReservedLine> = Vec::new();
    for &(product_id, quantity) in lines {
        let invalid = |quantity| Rejection {
            product_id: Some(product_id),
            reason: DomainError::InvalidQuantity { quantity }.to_string(),
            requested: quantity,
            available: 0,
        };
        if quantity <= 0 {
            return Err(invalid(quantity));
        }
        match summed.iter_mut().find(|l| l.product_id == product_id) {
            Some(line) => {
                line.quantity = line
                    .quantity
                    .checked_add(quantity)
                    .ok_or_else(|| invalid(i64::MAX))?;
            }
            None => summed.push(ReservedLine {
                product_id,
                quantity,
            }),
        }
    }
    Ok(summed)
}

/// How reservation streams are read (`event_store::aggregate`). Only the saga decides on
/// them, across products, so there is no command of its own; a few events per order, never
/// snapshotted.
pub struct Reservation;

impl Fold for Reservation {
    type State = ReservationState;
    type Event = ReservationEvent;

    fn stream_id(order_id: Uuid) -> String {
        stream_id(order_id)
    }

    fn evolve(state: ReservationState, event: &ReservationEvent) -> ReservationState {
        evolve(state, event)
    }
}
