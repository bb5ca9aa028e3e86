mod product;
mod reservation;
mod wire;

use uuid::Uuid;

use super::commands::ProductCommand;
use super::error::DomainError;
use super::events::{Money, ProductCreated, ProductEvent, StockReserved};
use super::product::{decide, evolve, ProductState};

/// A product built from past events, waiting for the command under test.
struct Given(ProductState);

fn given(events: &[ProductEvent]) -> Given {
    Given(events.iter().fold(ProductState::default(), evolve))
}

impl Given {
    fn when(&self, command: ProductCommand) -> Result<Vec<ProductEvent>, DomainError> {
        decide(&self.0, command)
    }
}

fn created(product_id: Uuid, price_cents: i64, initial_stock: i64) -> ProductEvent {
    ProductCreated {
        product_id,
        name: "Widget".into(),
        price: usd(price_cents),
        initial_stock,
    }
    .into()
}

fn usd(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: "USD".into(),
    }
}

fn reserved(product_id: Uuid, order_id: Uuid, quantity: i64) -> ProductEvent {
    StockReserved {
        product_id,
        order_id,
        quantity,
    }
    .into()
}
