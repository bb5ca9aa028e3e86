//! The business flow end to end: both services as processes, real Postgres, real NATS.

use serde_json::{json, Value};
use tests::TestSystem;

async fn place_order(system: &TestSystem, lines: Value) -> (u16, Value) {
    system
        .post(
            format!("{}/orders", system.orders.base_url),
            json!({ "customer_id": "alice", "lines": lines }),
        )
        .await
}

async fn product(system: &TestSystem, id: &str) -> Value {
    system
        .get(format!("{}/products/{id}", system.products.base_url))
        .await
        .1
}

#[tokio::test]
async fn a_new_product_appears_in_the_order_service_catalogue() {
    let system = TestSystem::start().await;
    let id = system.create_product("Teapot", 2_500, 7).await;

    let entry = system.catalogue_has(&id, 1).await;

    assert_eq!(entry["name"], "Teapot");
    assert_eq!(entry["price_cents"], 2_500);
    assert_eq!(entry["available"], true);
}

#[tokio::test]
async fn an_order_with_enough_stock_is_confirmed_and_stock_moves_to_reserved() {
    let system = TestSystem::start().await;
    let id = system.create_product("Kettle", 4_000, 5).await;
    system.catalogue_has(&id, 1).await;

    let (status, order) = place_order(&system, json!([{ "product_id": id, "quantity": 2 }])).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "pending");
    assert_eq!(order["total_cents"], 8_000);
    assert_eq!(order["lines"][0]["unit_price_cents"], 4_000);

    let settled = system.settled_order(order["id"].as_str().unwrap()).await;
    assert_eq!(settled["status"], "confirmed", "{settled}");
    let stock = system
        .eventually(format!("{}/products/{id}", system.products.base_url), |p| {
            p["stock_reserved"] == 2
        })
        .await;
    assert_eq!(stock["stock_available"], 3);
}

#[tokio::test]
async fn an_order_beyond_stock_is_rejected_naming_the_product_and_stock_is_unchanged() {
    let system = TestSystem::start().await;
    let plenty = system.create_product("Cup", 500, 100).await;
    let scarce = system.create_product("Saucer", 300, 1).await;
    system.catalogue_has(&plenty, 1).await;
    system.catalogue_has(&scarce, 1).await;

    let (status, order) = place_order(
        &system,
        json!([{ "product_id": plenty, "quantity": 3 }, { "product_id": scarce, "quantity": 2 }]),
    )
    .await;
    assert_eq!(status, 201, "{order}");

    let settled = system.settled_order(order["id"].as_str().unwrap()).await;
    assert_eq!(settled["status"], "rejected", "{settled}");
    let reason = settled["rejection_reason"].as_str().unwrap();
    assert!(
        reason.contains(&scarce),
        "the reason names the product: {reason}"
    );
    for (id, stock) in [(&plenty, 100), (&scarce, 1)] {
        let p = product(&system, id).await;
        assert_eq!(
            (p["stock_available"].as_i64(), p["stock_reserved"].as_i64()),
            (Some(stock), Some(0))
        );
    }
}

#[tokio::test]
async fn fifty_concurrent_orders_of_one_unit_against_a_stock_of_ten_confirm_exactly_ten() {
    let system = TestSystem::start().await;
    let id = system.create_product("Limited print", 9_900, 10).await;
    system.catalogue_has(&id, 1).await;

    let placed = futures::future::join_all(
        (0..50).map(|_| place_order(&system, json!([{ "product_id": id, "quantity": 1 }]))),
    )
    .await;
    let mut statuses = Vec::new();
    for (status, order) in placed {
        assert_eq!(status, 201, "{order}");
        let settled = system.settled_order(order["id"].as_str().unwrap()).await;
        statuses.push(settled["status"].as_str().unwrap().to_owned());
    }

    let confirmed = statuses.iter().filter(|s| *s == "confirmed").count();
    let rejected = statuses.iter().filter(|s| *s == "rejected").count();
    assert_eq!((confirmed, rejected), (10, 40));
    let stock = system
        .eventually(format!("{}/products/{id}", system.products.base_url), |p| {
            p["stock_reserved"] == 10
        })
        .await;
    assert_eq!(stock["stock_available"], 0);
}

#[tokio::test]
async fn cancelling_a_confirmed_order_releases_its_stock() {
    let system = TestSystem::start().await;
    let id = system.create_product("Lamp", 3_000, 4).await;
    system.catalogue_has(&id, 1).await;
    let (_, order) = place_order(&system, json!([{ "product_id": id, "quantity": 3 }])).await;
    let order_id = order["id"].as_str().unwrap();
    assert_eq!(system.settled_order(order_id).await["status"], "confirmed");

    let (status, cancelled) = system
        .post(
            format!("{}/orders/{order_id}/cancel", system.orders.base_url),
            json!({}),
        )
        .await;

    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let stock = system
        .eventually(format!("{}/products/{id}", system.products.base_url), |p| {
            p["stock_available"] == 4
        })
        .await;
    assert_eq!(stock["stock_reserved"], 0);
    // A cancelled order cannot be cancelled again.
    let (status, body) = system
        .post(
            format!("{}/orders/{order_id}/cancel", system.orders.base_url),
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn a_price_change_reaches_the_catalogue_and_later_orders_use_it() {
    let system = TestSystem::start().await;
    let id = system.create_product("Chair", 12_000, 10).await;
    system.catalogue_has(&id, 1).await;

    let (status, changed) = system
        .post(
            format!("{}/products/{id}/price", system.products.base_url),
            json!({ "price_cents": 9_900 }),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let version = changed["version"].as_i64().unwrap();
    let entry = system.catalogue_has(&id, version).await;
    assert_eq!(entry["price_cents"], 9_900);

    let (_, order) = place_order(&system, json!([{ "product_id": id, "quantity": 2 }])).await;
    assert_eq!(order["lines"][0]["unit_price_cents"], 9_900);
    assert_eq!(order["total_cents"], 19_800);
}

#[tokio::test]
async fn an_order_for_a_product_the_catalogue_does_not_know_is_a_422_naming_it() {
    let system = TestSystem::start().await;
    let unknown = uuid::Uuid::new_v4().to_string();

    let (status, body) =
        place_order(&system, json!([{ "product_id": unknown, "quantity": 1 }])).await;

    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(&unknown),
        "{body}"
    );
}
