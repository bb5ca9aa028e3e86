use uuid::Uuid;

/// Why a product command was refused. Each variant carries what the API needs to answer with a
/// precise 4xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("product not found")]
    ProductNotFound,
    #[error("product {product_id} already exists")]
    AlreadyExists { product_id: Uuid },
    #[error("name must not be empty")]
    EmptyName,
    #[error("name is {len} characters long, at most {max} are allowed")]
    NameTooLong { len: usize, max: usize },
    #[error("price must be positive, got {price_cents} cents")]
    InvalidPrice { price_cents: i64 },
    #[error("currency must be three upper-case letters (ISO 4217), got {currency:?}")]
    InvalidCurrency { currency: String },
    #[error("invalid quantity {quantity}")]
    InvalidQuantity { quantity: i64 },
    #[error("stock of product {product_id} would overflow")]
    StockOverflow { product_id: Uuid },
    #[error(
        "insufficient stock for product {product_id}: requested {requested}, available {available}"
    )]
    InsufficientStock {
        product_id: Uuid,
        requested: i64,
        available: i64,
    },
}
