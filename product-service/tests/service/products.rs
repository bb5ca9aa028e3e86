use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::TestApp;
use product_service::api::products::Product;

#[tokio::test]
async fn a_created_product_answers_201_with_its_state_location_and_version_1() {
    let app = TestApp::spawn().await;

    let response = app
        .post(
            "/products",
            &json!({ "name": "  Espresso cup ", "price_cents": 1250, "stock": 10 }),
        )
        .await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let product: Product = response.json().await.expect("a product body");
    assert_eq!(location, format!("/products/{}", product.id));
    assert_eq!(product.name, "Espresso cup");
    assert_eq!(product.price_cents, 1250);
    assert_eq!(
        product.currency, "USD",
        "the currency of a product created without one"
    );
    assert_eq!(product.stock_available, 10);
    assert_eq!(product.stock_reserved, 0);
    assert_eq!(product.version, 1);
}

#[tokio::test]
async fn a_product_keeps_the_currency_it_was_created_in_through_price_changes() {
    let app = TestApp::spawn().await;
    let body = json!({ "name": "Moka pot", "price_cents": 3900, "currency": "EUR", "stock": 2 });
    let response = app.post("/products", &body).await;
    assert_eq!(response.status(), 201);
    let created: Product = response.json().await.expect("a product body");
    assert_eq!(
        (created.price_cents, created.currency.as_str()),
        (3900, "EUR")
    );

    let path = format!("/products/{}/price", created.id);
    let response = app.post(&path, &json!({ "price_cents": 3500 })).await;
    assert_eq!(response.status(), 200);
    let read = app.product(created.id, 2).await;
    assert_eq!((read.price_cents, read.currency.as_str()), (3500, "EUR"));
    let history: Vec<Value> = app
        .get(&format!("/products/{}/events", created.id))
        .await
        .json()
        .await
        .expect("a list");
    let price = json!({ "amount_minor": 3500, "currency": "EUR" });
    assert_eq!(history[1]["payload"]["price"], price);
    assert_eq!(history[1]["schema_version"], 2);
}

#[tokio::test]
async fn a_created_product_is_readable_once_the_read_model_reaches_its_version() {
    let app = TestApp::spawn().await;
    let created = app.create_product("Teapot", 3000, 4).await;

    let read = app.product(created.id, created.version).await;

    assert_eq!(read, created);
}

#[tokio::test]
async fn products_are_listed_by_name_then_id_a_page_at_a_time() {
    let app = TestApp::spawn().await;
    let c = app.create_product("Cup", 100, 1).await;
    let a = app.create_product("Apron", 200, 2).await;
    let b = app.create_product("Bowl", 300, 3).await;
    for p in [&a, &b, &c] {
        app.product(p.id, p.version).await;
    }

    let all: Vec<Product> = app.get("/products").await.json().await.expect("a list");
    let page: Vec<Product> = app
        .get("/products?limit=1&offset=1")
        .await
        .json()
        .await
        .expect("a list");

    assert_eq!(all, vec![a, b.clone(), c]);
    assert_eq!(page, vec![b]);
}

#[tokio::test]
async fn changing_the_price_answers_with_the_new_price_and_version() {
    let app = TestApp::spawn().await;
    let created = app.create_product("Mug", 900, 3).await;

    let response = app
        .post(
            &format!("/products/{}/price", created.id),
            &json!({ "price_cents": 1100 }),
        )
        .await;

    assert_eq!(response.status(), 200);
    let changed: Product = response.json().await.expect("a product body");
    assert_eq!(changed.price_cents, 1100);
    assert_eq!(changed.version, 2);
    assert_eq!(app.product(created.id, 2).await, changed);
}

#[tokio::test]
async fn setting_the_current_price_again_changes_nothing() {
    let app = TestApp::spawn().await;
    let created = app.create_product("Mug", 900, 3).await;

    let response = app
        .post(
            &format!("/products/{}/price", created.id),
            &json!({ "price_cents": 900 }),
        )
        .await;

    assert_eq!(response.status(), 200);
    let unchanged: Product = response.json().await.expect("a product body");
    assert_eq!(unchanged, created);
}

#[tokio::test]
async fn restocking_adds_to_the_available_stock() {
    let app = TestApp::spawn().await;
    let created = app.create_product("Saucer", 400, 2).await;

    let response = app
        .post(
            &format!("/products/{}/restock", created.id),
            &json!({ "quantity": 5 }),
        )
        .await;

    assert_eq!(response.status(), 200);
    let restocked: Product = response.json().await.expect("a product body");
    assert_eq!(restocked.stock_available, 7);
    assert_eq!(restocked.version, 2);
    assert_eq!(app.product(created.id, 2).await, restocked);
}

#[tokio::test]
async fn the_history_lists_every_event_with_its_request_id_as_correlation() {
    let app = TestApp::spawn().await;
    let created = app.create_product("Kettle", 5000, 1).await;
    let response = app
        .http
        .post(app.url(&format!("/products/{}/restock", created.id)))
        .header("X-Request-Id", "req-42")
        .json(&json!({ "quantity": 2 }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["x-request-id"], "req-42");

    let history: Vec<Value> = app
        .get(&format!("/products/{}/events", created.id))
        .await
        .json()
        .await
        .expect("a list");

    let types: Vec<&str> = history.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["ProductCreated", "ProductRestocked"]);
    assert_eq!(history[0]["version"], 1);
    assert_eq!(history[1]["version"], 2);
    // As stored: ProductCreated at its current version 2, ProductRestocked at 1.
    assert_eq!(history[0]["schema_version"], 2);
    assert_eq!(history[1]["schema_version"], 1);
    assert_eq!(history[0]["payload"]["price"]["currency"], "USD");
    assert_eq!(history[0]["payload"]["initial_stock"], 1);
    assert_eq!(history[1]["payload"]["quantity"], 2);
    assert_eq!(history[1]["metadata"]["correlation_id"], "req-42");
    assert!(history[0]["position"].as_i64() < history[1]["position"].as_i64());
    assert!(history[0]["recorded_at"].is_string());
}

#[tokio::test]
async fn a_read_waiting_for_a_version_never_written_answers_stale_after_the_wait() {
    let app = TestApp::spawn().await;
    let created = app.create_product("Sugar bowl", 700, 1).await;
    let started = std::time::Instant::now();

    let response = app
        .get(&format!("/products/{}?min_version=99", created.id))
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-stale"], "true");
    assert!(started.elapsed() >= Duration::from_secs(4));
    let product: Product = response.json().await.expect("a product body");
    assert_eq!(product.version, 1);
}

#[tokio::test]
async fn health_reports_live_and_ready_and_the_openapi_document_lists_every_route() {
    let app = TestApp::spawn().await;

    let live = app.get("/health/live").await;
    let ready = app.get("/health/ready").await;
    let openapi: Value = app.get("/openapi.json").await.json().await.expect("json");

    assert_eq!(live.status(), 200);
    assert_eq!(ready.status(), 200);
    let paths = openapi["paths"].as_object().expect("paths");
    for path in [
        "/products",
        "/products/{id}",
        "/products/{id}/price",
        "/products/{id}/restock",
        "/products/{id}/events",
        "/health/live",
        "/health/ready",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    assert!(openapi["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn an_unknown_product_is_not_found_even_when_waiting_for_a_version() {
    let app = TestApp::spawn().await;

    let response = app
        .get(&format!("/products/{}?min_version=1", Uuid::now_v7()))
        .await;

    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn concurrent_restocks_each_count_exactly_once_or_answer_409() {
    let app = TestApp::spawn().await;
    let created = app.create_product("Popular", 100, 0).await;
    let path = format!("/products/{}/restock", created.id);
    let body = json!({ "quantity": 1 });

    let responses = futures::future::join_all((0..10).map(|_| app.post(&path, &body))).await;

    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    let applied = statuses.iter().filter(|s| **s == 200).count() as i64;
    assert!(applied >= 1);
    let after = app.product(created.id, 1 + applied).await;
    assert_eq!(after.stock_available, applied);
    assert_eq!(after.version, 1 + applied);
}
