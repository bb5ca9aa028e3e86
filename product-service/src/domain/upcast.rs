//! The upcast steps of every old event version this service reads: its own `ProductCreated`
//! and `PriceChanged` v1, and order-service's `OrderPlaced` v1 (the same function order-service
//! has, since a consumer reads every version its producer ever wrote). Pure functions on the
//! payload (docs/adr/0007-evolving-events.md).

use serde_json::{json, Value};

/// Every price before version 2 was in the one currency the system then had.
pub const V1_CURRENCY: &str = "USD";

/// `ProductCreated` v1 to v2: `price_cents` becomes `price` in [`V1_CURRENCY`].
pub fn product_created_v1(mut payload: Value) -> Result<Value, String> {
    cents_to_money(&mut payload, "price_cents", "price")?;
    Ok(payload)
}

/// `PriceChanged` v1 to v2: `old_price_cents` and `price_cents` become `old_price` and
/// `price` in [`V1_CURRENCY`].
pub fn price_changed_v1(mut payload: Value) -> Result<Value, String> {
    cents_to_money(&mut payload, "old_price_cents", "old_price")?;
    cents_to_money(&mut payload, "price_cents", "price")?;
    Ok(payload)
}

/// order-service's `OrderPlaced` v1 to v2: each line's `unit_price_cents` becomes
/// `unit_price`, and `total_cents` becomes `total`, in [`V1_CURRENCY`].
pub fn order_placed_v1(mut payload: Value) -> Result<Value, String> {
    let object = event_store::wire::object(&mut payload)?;
    let lines = object
        .get_mut("lines")
        .and_then(Value::as_array_mut)
        .ok_or("missing field `lines`, or not an array")?;
    for line in lines {
        cents_to_money(line, "unit_price_cents", "unit_price")?;
    }
    cents_to_money(&mut payload, "total_cents", "total")?;
    Ok(payload)
}

/// Replaces the integer field `cents` of an object with the money field `money` in
/// [`V1_CURRENCY`].
fn cents_to_money(value: &mut Value, cents: &str, money: &str) -> Result<(), String> {
    let object = event_store::wire::object(value)?;
    let amount = object
        .remove(cents)
        .filter(Value::is_i64)
        .ok_or_else(|| format!("missing field `{cents}`, or not an integer"))?;
    let price = json!({ "amount_minor": amount, "currency": V1_CURRENCY });
    object.insert(money.to_owned(), price);
    Ok(())
}
