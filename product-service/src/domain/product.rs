//! The product aggregate: catalogue data and stock of one product.

use event_store::aggregate::{Aggregate, Fold, SnapshotPolicy};
use event_store::validate::{bounded_text, TextError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::ProductCommand;
use super::error::DomainError;
use super::events::{
    Money, PriceChanged, ProductCreated, ProductEvent, ProductRestocked, StockReserved,
};

/// Longest product name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// The stream holding one product's events.
pub fn stream_id(product_id: Uuid) -> String {
    format!("product-{product_id}")
}

/// Version of [`ProductState`]'s shape in stored snapshots. Change it whenever the struct
/// changes: snapshots of another version are ignored and the product folded from its events.
pub const SNAPSHOT_SCHEMA_VERSION: i32 = 3;

/// A command writes a product's snapshot once this many events were folded on top of the
/// last one. (Reactions write one for every product they append to, once per batch.)
pub const SNAPSHOT_EVERY: usize = 32;

/// One product as folded from its events; `Default` is a product that does not exist yet.
///
/// Its size does not grow with the product's history, so its snapshot stays small however
/// many orders the product served: what each order holds is kept by that order's reservation
/// stream, which every reservation and release reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductState {
    pub exists: bool,
    pub product_id: Uuid,
    pub name: String,
    /// The price in minor units of `currency`.
    pub price_cents: i64,
    /// The product's currency (ISO 4217), fixed when it was created.
    pub currency: String,
    pub stock_available: i64,
    pub stock_reserved: i64,
}

impl ProductState {
    /// The price as the events carry it.
    pub fn price(&self) -> Money {
        Money {
            amount_minor: self.price_cents,
            currency: self.currency.clone(),
        }
    }
}

/// Decides what a command does to a product, without changing it.
pub fn decide(
    state: &ProductState,
    command: ProductCommand,
) -> Result<Vec<ProductEvent>, DomainError> {
    match command {
        ProductCommand::CreateProduct {
            product_id,
            name,
            price_cents,
            currency,
            stock,
        } => {
            let name = validate_name(&name)?;
            validate_price(price_cents)?;
            validate_currency(&currency)?;
            if stock < 0 {
                return Err(DomainError::InvalidQuantity { quantity: stock });
            }
            if state.exists {
                return Err(DomainError::AlreadyExists { product_id });
            }
            Ok(vec![ProductCreated {
                product_id,
                name,
                price: Money {
                    amount_minor: price_cents,
                    currency,
                },
                initial_stock: stock,
            }
            .into()])
        }
        ProductCommand::ChangePrice { price_cents } => {
            let state = existing(state)?;
            validate_price(price_cents)?;
            if price_cents == state.price_cents {
                return Ok(vec![]);
            }
            Ok(vec![PriceChanged {
                product_id: state.product_id,
                old_price: state.price(),
                price: Money {
                    amount_minor: price_cents,
                    currency: state.currency.clone(),
                },
            }
            .into()])
        }
        ProductCommand::Restock { quantity } => {
            let state = existing(state)?;
            validate_quantity(quantity)?;
            let product_id = state.product_id;
            if state.stock_available.checked_add(quantity).is_none() {
                return Err(DomainError::StockOverflow { product_id });
            }
            Ok(vec![ProductRestocked {
                product_id,
                quantity,
            }
            .into()])
        }
        ProductCommand::ReserveStock { order_id, quantity } => {
            let state = existing(state)?;
            validate_quantity(quantity)?;
            if quantity > state.stock_available {
                return Err(DomainError::InsufficientStock {
                    product_id: state.product_id,
                    requested: quantity,
                    available: state.stock_available,
                });
            }
            Ok(vec![StockReserved {
                product_id: state.product_id,
                order_id,
                quantity,
            }
            .into()])
        }
    }
}

/// Applies one event. Never fails: events are facts, and arithmetic saturates rather than panics.
pub fn evolve(mut state: ProductState, event: &ProductEvent) -> ProductState {
    match event {
        ProductEvent::ProductCreated(e) => {
            state.exists = true;
            state.product_id = e.product_id;
            state.name.clone_from(&e.name);
            state.price_cents = e.price.amount_minor;
            state.currency.clone_from(&e.price.currency);
            state.stock_available = e.initial_stock;
        }
        ProductEvent::PriceChanged(e) => state.price_cents = e.price.amount_minor,
        ProductEvent::ProductRestocked(e) => {
            state.stock_available = state.stock_available.saturating_add(e.quantity);
        }
        ProductEvent::StockReserved(e) => {
            state.stock_available = state.stock_available.saturating_sub(e.quantity);
            state.stock_reserved = state.stock_reserved.saturating_add(e.quantity);
        }
        ProductEvent::StockReleased(e) => {
            state.stock_available = state.stock_available.saturating_add(e.quantity);
            state.stock_reserved = state.stock_reserved.saturating_sub(e.quantity);
        }
    }
    state
}

fn existing(state: &ProductState) -> Result<&ProductState, DomainError> {
    if state.exists {
        Ok(state)
    } else {
        Err(DomainError::ProductNotFound)
    }
}

fn validate_name(name: &str) -> Result<String, DomainError> {
    bounded_text(name, MAX_NAME_CHARS).map_err(|e| match e {
        TextError::Empty => DomainError::EmptyName,
        TextError::TooLong { len, max } => DomainError::NameTooLong { len, max },
    })
}

fn validate_price(price_cents: i64) -> Result<(), DomainError> {
    if price_cents <= 0 {
        return Err(DomainError::InvalidPrice { price_cents });
    }
    Ok(())
}

/// An ISO 4217 code's form: three upper-case ASCII letters.
pub fn validate_currency(currency: &str) -> Result<(), DomainError> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(DomainError::InvalidCurrency {
            currency: currency.chars().take(16).collect(),
        })
    }
}

fn validate_quantity(quantity: i64) -> Result<(), DomainError> {
    if quantity <= 0 {
        return Err(DomainError::InvalidQuantity { quantity });
    }
    Ok(())
}

/// The product for `event_store::aggregate::Commands`, which does the IO around
/// [`decide`] and [`evolve`]. Snapshotted: a product stream gains events with every order.
pub struct Product;

impl Fold for Product {
    type State = ProductState;
    type Event = ProductEvent;
    const SNAPSHOT: Option<SnapshotPolicy> = Some(SnapshotPolicy {
        schema_version: SNAPSHOT_SCHEMA_VERSION,
        every: SNAPSHOT_EVERY,
    });

    fn stream_id(product_id: Uuid) -> String {
        stream_id(product_id)
    }

    fn evolve(state: ProductState, event: &ProductEvent) -> ProductState {
        evolve(state, event)
    }
}

impl Aggregate for Product {
    type Command = ProductCommand;
    type Error = DomainError;

    fn decide(
        state: &ProductState,
        command: ProductCommand,
    ) -> Result<Vec<ProductEvent>, DomainError> {
        decide(state, command)
    }
}
