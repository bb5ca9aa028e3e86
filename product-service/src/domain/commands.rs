use uuid::Uuid;

/// What a caller asks of one product. Commands other than `CreateProduct` address the product
/// whose stream was loaded, so they carry no product id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    /// Name is trimmed, non-empty and at most 200 characters; price > 0 in minor units of
    /// `currency` (three upper-case letters); stock >= 0.
    CreateProduct {
        product_id: Uuid,
        name: String,
        price_cents: i64,
        currency: String,
        stock: i64,
    },
    /// Price > 0, in the product's currency; the current price yields no events.
    ChangePrice { price_cents: i64 },
    /// Quantity > 0.
    Restock { quantity: i64 },
    /// Quantity > 0 and at most the available stock. That an order reserves once, and
    /// releases exactly what it reserved, is the reservation aggregate's to decide
    /// (`domain::reservation`): it holds each order's lines.
    ReserveStock { order_id: Uuid, quantity: i64 },
}
