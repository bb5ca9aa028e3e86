mod catalog;
mod order;
mod wire;

use uuid::Uuid;

use super::commands::OrderCommand;
use super::error::DomainError;
use super::events::{Money, OrderEvent, OrderLine, OrderPlaced};
use super::order::{decide, evolve, OrderState};

/// An order built from past events, waiting for the command under test.
struct Given(OrderState);

fn given(events: &[OrderEvent]) -> Given {
    Given(events.iter().fold(OrderState::default(), evolve))
}

impl Given {
    fn when(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
        decide(&self.0, command)
    }
}

fn line(quantity: i64, unit_price_cents: i64) -> OrderLine {
    OrderLine {
        product_id: Uuid::new_v4(),
        quantity,
        unit_price: usd(unit_price_cents),
    }
}

fn usd(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: "USD".into(),
    }
}

fn placed(order_id: Uuid) -> OrderEvent {
    OrderPlaced {
        order_id,
        customer_id: "alice".into(),
        lines: vec![line(2, 150)],
        total: usd(300),
    }
    .into()
}
