//! `Idempotency-Key` end to end: both services as processes. A client that gave up waiting
//! retries with its key; the system takes the order once and reserves its stock once.

use std::time::Duration;

use serde_json::{json, Value};
use tests::{TestSystem, SETTLE};

#[tokio::test]
async fn a_retried_order_is_placed_once_and_its_stock_reserved_once() {
    let system = TestSystem::start().await;
    let product = system.create_product("Kettle", 4_000, 10).await;
    system.catalogue_has(&product, 1).await;
    let key = format!("checkout-{}", uuid_like());
    let url = format!("{}/orders", system.orders.base_url);
    let body =
        json!({ "customer_id": "alice", "lines": [{ "product_id": product, "quantity": 3 }] });

    // The client gives up before any answer (or may not even have sent it all).
    let impatient = system
        .http
        .post(&url)
        .header("Idempotency-Key", &key)
        .json(&body)
        .timeout(Duration::from_millis(1))
        .send()
        .await;
    assert!(impatient.is_err(), "the impatient client saw no answer");

    // It retries with the same key until the first attempt is no longer in flight.
    let deadline = tokio::time::Instant::now() + SETTLE;
    let (status, order) = loop {
        let response = system
            .http
            .post(&url)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        if status != 409 {
            break (status, answer);
        }
        assert!(tokio::time::Instant::now() < deadline, "still in flight");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().unwrap().to_owned();
    // Once more, surely replayed now, and naming the same order.
    let again = system
        .http
        .post(&url)
        .header("Idempotency-Key", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.json::<Value>().await.unwrap()["id"],
        order_id.as_str()
    );

    let settled = system.settled_order(&order_id).await;
    assert_eq!(settled["status"], "confirmed", "{settled}");
    let stock = system
        .eventually(
            format!("{}/products/{product}", system.products.base_url),
            |p| p["stock_reserved"] != 0,
        )
        .await;
    assert_eq!(
        (
            stock["stock_available"].clone(),
            stock["stock_reserved"].clone()
        ),
        (json!(7), json!(3))
    );
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'")
            .fetch_one(&system.orders_db.pool)
            .await
            .unwrap();
    assert_eq!(orders, 1, "one order");
    let reservations: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_type, metadata FROM events WHERE stream_id LIKE 'reservation-%'",
    )
    .fetch_all(&system.products_db.pool)
    .await
    .unwrap();
    assert_eq!(reservations.len(), 1, "one reservation: {reservations:?}");
    assert_eq!(reservations[0].0, "ReservationConfirmed");
    assert_eq!(
        reservations[0].1["idempotency_key"],
        key.as_str(),
        "the key went along"
    );
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is past 1970")
            .as_nanos()
    )
}
