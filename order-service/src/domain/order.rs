//! The order aggregate.

use std::fmt;

use event_store::aggregate::{Aggregate, Fold};
use event_store::validate::{bounded_text, TextError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::commands::OrderCommand;
use super::error::DomainError;
use super::events::{
    Money, OrderCancelled, OrderConfirmed, OrderEvent, OrderLine, OrderPlaced, OrderRejected,
};

/// Longest customer id accepted, in characters.
pub const MAX_CUSTOMER_ID_CHARS: usize = 100;
/// Most lines one order may have.
pub const MAX_LINES: usize = 100;
/// Largest quantity of one line.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// The stream holding one order's events.
pub fn stream_id(order_id: Uuid) -> String {
    format!("order-{order_id}")
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Placed, waiting for product-service to reserve its stock.
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    /// The name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One order as folded from its events; `Default` is an order not placed yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    pub order_id: Uuid,
    /// `None` until the order is placed.
    pub status: Option<OrderStatus>,
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub rejection_reason: Option<String>,
}

/// Decides what a command does to an order, without changing it.
pub fn decide(state: &OrderState, command: OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
    use OrderStatus::{Cancelled, Confirmed, Pending, Rejected};
    let order_id = state.order_id;
    let event: OrderEvent = match command {
        OrderCommand::PlaceOrder {
            order_id,
            customer_id,
            lines,
        } => {
            let customer_id = validate_customer_id(&customer_id)?;
            let total = validate_lines(&lines)?;
            if state.status.is_some() {
                return Err(DomainError::AlreadyExists { order_id });
            }
            OrderPlaced {
                order_id,
                customer_id,
                lines,
                total,
            }
            .into()
        }
        OrderCommand::Confirm => match existing(state)? {
            Pending => OrderConfirmed { order_id }.into(),
            Confirmed | Rejected | Cancelled => return Ok(vec![]),
        },
        OrderCommand::Reject { reason, product_id } => match existing(state)? {
            Pending => OrderRejected {
                order_id,
                reason,
                product_id,
            }
            .into(),
            Rejected | Cancelled => return Ok(vec![]),
            // A reservation is decided once, so a rejection after a confirmation breaks the
            // contract with product-service and is surfaced rather than ignored.
            from @ Confirmed => {
                return Err(DomainError::InvalidTransition {
                    from,
                    action: "reject",
                })
            }
        },
        OrderCommand::Cancel => match existing(state)? {
            Pending | Confirmed => OrderCancelled { order_id }.into(),
            from @ (Rejected | Cancelled) => {
                return Err(DomainError::InvalidTransition {
                    from,
                    action: "cancel",
                })
            }
        },
    };
    Ok(vec![event])
}

fn existing(state: &OrderState) -> Result<OrderStatus, DomainError> {
    state.status.ok_or(DomainError::OrderNotFound)
}

/// Applies one event.
pub fn evolve(mut state: OrderState, event: &OrderEvent) -> OrderState {
    match event {
        OrderEvent::OrderPlaced(e) => {
            state.order_id = e.order_id;
            state.status = Some(OrderStatus::Pending);
            state.customer_id.clone_from(&e.customer_id);
            state.lines.clone_from(&e.lines);
            state.total.clone_from(&e.total);
        }
        OrderEvent::OrderConfirmed(_) => state.status = Some(OrderStatus::Confirmed),
        OrderEvent::OrderRejected(e) => {
            state.status = Some(OrderStatus::Rejected);
            state.rejection_reason = Some(e.reason.clone());
        }
        OrderEvent::OrderCancelled(_) => state.status = Some(OrderStatus::Cancelled),
    }
    state
}

fn validate_customer_id(customer_id: &str) -> Result<String, DomainError> {
    bounded_text(customer_id, MAX_CUSTOMER_ID_CHARS).map_err(|e| match e {
        TextError::Empty => DomainError::EmptyCustomerId,
        TextError::TooLong { len, max } => DomainError::CustomerIdTooLong { len, max },
    })
}

/// Checks every line and returns the order's total, in the one currency of its lines.
fn validate_lines(lines: &[OrderLine]) -> Result<Money, DomainError> {
    if !(1..=MAX_LINES).contains(&lines.len()) {
        return Err(DomainError::InvalidLineCount {
            count: lines.len(),
            min: 1,
            max: MAX_LINES,
        });
    }
    let mut total: i64 = 0;
    for line in lines {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(DomainError::InvalidQuantity {
                product_id: line.product_id,
                quantity: line.quantity,
                max: MAX_QUANTITY,
            });
        }
        if line.unit_price.amount_minor <= 0 {
            return Err(DomainError::InvalidPrice {
                product_id: line.product_id,
                price_cents: line.unit_price.amount_minor,
            });
        }
        if line.unit_price.currency != lines[0].unit_price.currency {
            return Err(DomainError::MixedCurrencies {
                product_id: line.product_id,
                currency: line.unit_price.currency.clone(),
                first: lines[0].unit_price.currency.clone(),
            });
        }
        total = line
            .quantity
            .checked_mul(line.unit_price.amount_minor)
            .and_then(|amount| total.checked_add(amount))
            .ok_or(DomainError::TotalOverflow)?;
    }
    Ok(Money {
        amount_minor: total,
        currency: lines[0].unit_price.currency.clone(),
    })
}

/// The order for `event_store::aggregate::Commands`, which does the IO around
/// [`decide`] and [`evolve`].
pub struct Order;

impl Fold for Order {
    type State = OrderState;
    type Event = OrderEvent;

    fn stream_id(order_id: Uuid) -> String {
        stream_id(order_id)
    }

    fn evolve(state: OrderState, event: &OrderEvent) -> OrderState {
        evolve(state, event)
    }
}

impl Aggregate for Order {
    type Command = OrderCommand;
    type Error = DomainError;

    fn decide(state: &OrderState, command: OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
        decide(state, command)
    }
}
