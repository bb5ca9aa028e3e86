//! One request id follows an order through both services: the client's `X-Request-Id` is the
//! `correlation_id` of every event the saga writes, in either database.

use serde_json::json;
use tests::TestSystem;

#[tokio::test]
async fn the_request_id_of_an_order_is_the_correlation_id_of_every_event_of_its_saga() {
    let system = TestSystem::start().await;
    let product = system.create_product("Kettle", 4_000, 5).await;
    system.catalogue_has(&product, 1).await;

    let response = system
        .http
        .post(format!("{}/orders", system.orders.base_url))
        .header("X-Request-Id", "checkout-42")
        .json(&json!({
            "customer_id": "alice",
            "lines": [{ "product_id": product, "quantity": 2 }],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let order: serde_json::Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    let settled = system.settled_order(&id).await;
    assert_eq!(settled["status"], "confirmed", "{settled}");

    let orders = system.orders_db.store();
    let products = system.products_db.store();
    let order_events = orders.read_stream(&format!("order-{id}"), 1).await.unwrap();
    let reservation = products
        .read_stream(&format!("reservation-{id}"), 1)
        .await
        .unwrap();
    let stock = products
        .read_stream(&format!("product-{product}"), 2)
        .await
        .unwrap();
    let types = |events: &[event_store::RecordedEvent]| -> Vec<String> {
        events.iter().map(|e| e.event_type.clone()).collect()
    };
    assert_eq!(types(&order_events), ["OrderPlaced", "OrderConfirmed"]);
    assert_eq!(types(&reservation), ["ReservationConfirmed"]);
    assert_eq!(types(&stock), ["StockReserved"]);
    for event in order_events.iter().chain(&reservation).chain(&stock) {
        assert_eq!(
            event.metadata.correlation_id.as_deref(),
            Some("checkout-42"),
            "{} {}",
            event.event_type,
            event.stream_id
        );
    }
}
