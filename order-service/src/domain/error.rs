use uuid::Uuid;

use super::order::OrderStatus;

/// Why an order command was refused. Each variant carries what the API needs to answer with a
/// precise 4xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("order not found")]
    OrderNotFound,
    #[error("order {order_id} already exists")]
    AlreadyExists { order_id: Uuid },
    #[error("customer id must not be empty")]
    EmptyCustomerId,
    #[error("customer id is {len} characters long, at most {max} are allowed")]
    CustomerIdTooLong { len: usize, max: usize },
    #[error("an order needs between {min} and {max} lines, got {count}")]
    InvalidLineCount {
        count: usize,
        min: usize,
        max: usize,
    },
    #[error("invalid quantity {quantity} for product {product_id}, allowed 1 to {max}")]
    InvalidQuantity {
        product_id: Uuid,
        quantity: i64,
        max: i64,
    },
    #[error("price must be positive, got {price_cents} cents for product {product_id}")]
    InvalidPrice { product_id: Uuid, price_cents: i64 },
    #[error(
        "product {product_id} is priced in {currency}, but the order's first line in {first}: \
         an order is in one currency"
    )]
    MixedCurrencies {
        product_id: Uuid,
        currency: String,
        first: String,
    },
    #[error("order total is too large")]
    TotalOverflow,
    #[error("cannot {action} an order that is {from}")]
    InvalidTransition {
        from: OrderStatus,
        action: &'static str,
    },
}
