//! One product as order-service sees it: enough to price an order and tell a client whether
//! the product can be ordered. Stock here lags product-service and is only a hint; the
//! reservation there is the authority.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::events::Money;
use super::product_events::ProductEvent;

/// A product in order-service's local catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CatalogEntry {
    pub product_id: Uuid,
    pub name: String,
    /// The price in minor units of `currency`.
    pub price_cents: i64,
    pub currency: String,
    pub stock_available: i64,
    /// Whether any stock is left, as last seen.
    pub available: bool,
}

/// Applies one product event to the entry of the product it names. Start from `None`; events of
/// other products, reservation events, and stock events before `ProductCreated` change nothing.
pub fn evolve(entry: Option<CatalogEntry>, event: &ProductEvent) -> Option<CatalogEntry> {
    let entry = match (entry, event) {
        (Some(entry), _) if event.product_id() != Some(entry.product_id) => return Some(entry),
        (_, ProductEvent::ProductCreated(e)) => {
            return Some(CatalogEntry::with_stock(
                e.product_id,
                e.name.clone(),
                e.price.clone(),
                e.initial_stock,
            ))
        }
        (entry, _) => entry?,
    };
    let mut price = Money {
        amount_minor: entry.price_cents,
        currency: entry.currency,
    };
    let mut stock = entry.stock_available;
    match event {
        ProductEvent::PriceChanged(e) => price.clone_from(&e.price),
        ProductEvent::ProductRestocked(e) => stock = stock.saturating_add(e.quantity),
        ProductEvent::StockReserved(e) => stock = stock.saturating_sub(e.quantity),
        ProductEvent::StockReleased(e) => stock = stock.saturating_add(e.quantity),
        _ => {}
    }
    Some(CatalogEntry::with_stock(
        entry.product_id,
        entry.name,
        price,
        stock,
    ))
}

impl CatalogEntry {
    /// An entry whose `available` flag agrees with its stock.
    pub fn with_stock(product_id: Uuid, name: String, price: Money, stock_available: i64) -> Self {
        CatalogEntry {
            product_id,
            name,
            price_cents: price.amount_minor,
            currency: price.currency,
            stock_available,
            available: stock_available > 0,
        }
    }
}
