//! product-service's own reading of the order-service events it reacts to. Only the fields it
//! needs; unknown fields and unknown event types are ignored, so order-service can evolve freely.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use event_store::wire_events;

wire_events! {
    /// The order events product-service consumes, at the versions order-service writes.
    OrderEvent { OrderPlaced = 2 [upcast::order_placed_v1], OrderCancelled }
}

/// An order was placed and waits for its stock. Version 2 (prices carry a currency), which
/// changed no field read here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub lines: Vec<OrderedLine>,
}

/// One line of a placed order, as far as stock is concerned.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OrderedLine {
    pub product_id: Uuid,
    pub quantity: i64,
}

/// An order was cancelled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OrderCancelled {
    pub order_id: Uuid,
}

impl OrderPlaced {
    /// The lines as `(product_id, quantity)`, the shape `reservation::reserve_order` takes.
    pub fn quantities(&self) -> Vec<(Uuid, i64)> {
        self.lines
            .iter()
            .map(|line| (line.product_id, line.quantity))
            .collect()
    }
}

impl OrderEvent {
    /// The order the event is about.
    pub fn order_id(&self) -> Uuid {
        match self {
            Self::OrderPlaced(e) => e.order_id,
            Self::OrderCancelled(e) => e.order_id,
        }
    }
}

/// The upcast steps of order-service's old versions, the same functions as its own: a
/// consumer reads every version its producer ever wrote.
pub mod upcast {
    use serde_json::{json, Value};

    /// The currency of every price before version 2.
    const V1_CURRENCY: &str = "USD";

    /// `OrderPlaced` v1 to v2: each line's `unit_price_cents` becomes `unit_price`, and
    /// `total_cents` becomes `total`, in USD.
    pub fn order_placed_v1(mut payload: Value) -> Result<Value, String> {
        let object = event_store::wire::object(&mut payload)?;
        let lines = object
            .get_mut("lines")
            .and_then(Value::as_array_mut)
            .ok_or("missing array field `lines`")?;
        for line in lines {
            cents_to_money(line, "unit_price_cents", "unit_price")?;
        }
        cents_to_money(&mut payload, "total_cents", "total")?;
        Ok(payload)
    }

    fn cents_to_money(value: &mut Value, cents: &str, money: &str) -> Result<(), String> {
        let object = event_store::wire::object(value)?;
        let amount = object
            .remove(cents)
            .filter(Value::is_i64)
            .ok_or_else(|| format!("missing integer field `{cents}`"))?;
        let price = json!({ "amount_minor": amount, "currency": V1_CURRENCY });
        object.insert(money.to_owned(), price);
        Ok(())
    }
}
