use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{id_of, TestApp};

#[tokio::test]
async fn a_product_created_in_product_service_appears_in_the_catalogue() {
    let app = TestApp::spawn().await;

    let id = app.create_product("Widget", 250, 7).await;

    let product = app.catalogue_entry(id, 1).await;
    let expected = json!({
        "id": id, "name": "Widget", "price_cents": 250, "currency": "USD",
        "stock_available": 7, "available": true, "version": 1,
    });
    assert_eq!(product, expected);
    let list: Value = app.get("/catalog/products").await.json().await.unwrap();
    assert_eq!(list["products"], json!([expected]));
}

#[tokio::test]
async fn a_price_change_reaches_the_catalogue_and_prices_later_orders() {
    let app = TestApp::spawn().await;
    let id = app.create_product("Widget", 100, 10).await;
    let before = app.placed("alice", &[(id, 2)]).await;

    app.publish_product_event(
        &format!("product-{id}"),
        2,
        "PriceChanged",
        json!({ "product_id": id, "old_price_cents": 100, "price_cents": 90 }),
    )
    .await;

    let product = app.catalogue_entry(id, 2).await;
    assert_eq!(
        (product["price_cents"].clone(), product["version"].clone()),
        (json!(90), json!(2))
    );
    let after = app.placed("alice", &[(id, 2)]).await;
    assert_eq!(after["lines"][0]["unit_price_cents"], 90);
    assert_eq!(after["total_cents"], 180);
    let earlier = app.order_with_status(&id_of(&before), "pending").await;
    assert_eq!(
        earlier["total_cents"], 200,
        "an order keeps the price it was placed at"
    );
}

#[tokio::test]
async fn stock_events_move_the_catalogue_stock() {
    let app = TestApp::spawn().await;
    let id = app.create_product("Widget", 100, 3).await;
    let stream = format!("product-{id}");
    let order = uuid::Uuid::new_v4();

    app.publish_product_event(
        &stream,
        2,
        "StockReserved",
        json!({ "product_id": id, "order_id": order, "quantity": 3 }),
    )
    .await;
    let sold_out = app.catalogue_entry(id, 2).await;
    app.publish_product_event(
        &stream,
        3,
        "ProductRestocked",
        json!({ "product_id": id, "quantity": 5 }),
    )
    .await;
    app.publish_product_event(
        &stream,
        4,
        "StockReleased",
        json!({ "product_id": id, "order_id": order, "quantity": 3 }),
    )
    .await;
    let restocked = app.catalogue_entry(id, 4).await;

    assert_eq!(
        (
            sold_out["stock_available"].clone(),
            sold_out["available"].clone()
        ),
        (json!(0), json!(false))
    );
    assert_eq!(
        (
            restocked["stock_available"].clone(),
            restocked["available"].clone()
        ),
        (json!(8), json!(true))
    );
}

#[tokio::test]
async fn a_product_not_yet_in_the_catalogue_is_not_found_and_marked_after_waiting() {
    let app = TestApp::spawn().await;
    let id = app.create_product("Widget", 100, 3).await;

    let missing = app
        .get(&format!("/catalog/products/{}", uuid::Uuid::new_v4()))
        .await;
    let behind = app
        .get(&format!("/catalog/products/{id}?min_version=2"))
        .await;

    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(behind.status(), StatusCode::OK);
    assert_eq!(behind.headers()["x-stale"], "true");
}
