use uuid::Uuid;

use super::events::OrderLine;

/// What a caller asks of one order. Commands other than `PlaceOrder` address the order whose
/// stream was loaded, so they carry no order id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Customer id is trimmed, non-empty and at most 100 characters; 1 to 100 lines, each with a
    /// quantity of 1 to 1,000,000 and a positive unit price taken from the catalogue.
    PlaceOrder {
        order_id: Uuid,
        customer_id: String,
        lines: Vec<OrderLine>,
    },
    /// Stock was reserved. Only a pending order changes; any other yields no events, since a
    /// cancellation may race the reservation and redeliveries must be harmless.
    Confirm,
    /// Stock could not be reserved. Only a pending order changes; a cancelled or rejected one
    /// yields no events.
    Reject {
        reason: String,
        product_id: Option<Uuid>,
    },
    /// The customer withdrew a pending or confirmed order.
    Cancel,
}
