//! `Idempotency-Key` on product-service's writes, and the key carried down the saga.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{order_key, order_placed, TestApp};

async fn post_keyed(app: &TestApp, path: &str, key: &str, body: &Value) -> Response {
    app.http
        .post(app.url(path))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

fn replayed(response: &Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// Sends `body` to `path` twice under one key: both answers, the second replayed.
async fn twice(app: &TestApp, path: &str, body: &Value) -> (StatusCode, Value, Value) {
    let key = Uuid::new_v4().to_string();
    let first = post_keyed(app, path, &key, body).await;
    let status = first.status();
    assert!(!replayed(&first));
    let first: Value = first.json().await.expect("a body");
    let second = post_keyed(app, path, &key, body).await;
    assert_eq!(second.status(), status);
    assert!(replayed(&second), "the second answer is the kept one");
    (status, first, second.json().await.expect("a body"))
}

#[tokio::test]
async fn creating_a_product_under_a_key_creates_it_once() {
    let app = TestApp::spawn().await;
    let body = json!({ "name": "Kettle", "price_cents": 3000, "stock": 4 });

    let (status, first, second) = twice(&app, "/products", &body).await;

    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(first, second);
    let id = first["id"].as_str().expect("an id");
    assert_eq!(
        app.event_types(&format!("product-{id}")).await,
        ["ProductCreated"]
    );
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ProductCreated'")
            .fetch_one(&app.db.pool)
            .await
            .expect("a count");
    assert_eq!(created, 1);
}

#[tokio::test]
async fn restocking_under_a_key_adds_the_stock_once() {
    let app = TestApp::spawn().await;
    let product = app.create_product("Mill", 2000, 1).await;

    let path = format!("/products/{}/restock", product.id);
    let (status, first, second) = twice(&app, &path, &json!({ "quantity": 5 })).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(first, second);
    assert_eq!(first["stock_available"], 6);
    assert_eq!(app.product(product.id, 2).await.stock_available, 6);
    assert_eq!(
        app.event_types(&format!("product-{}", product.id)).await,
        ["ProductCreated", "ProductRestocked"]
    );
}

#[tokio::test]
async fn changing_a_price_under_a_key_changes_it_once() {
    let app = TestApp::spawn().await;
    let product = app.create_product("Scale", 1500, 1).await;

    let path = format!("/products/{}/price", product.id);
    let (status, first, second) = twice(&app, &path, &json!({ "price_cents": 1700 })).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(first, second);
    assert_eq!(
        (first["price_cents"].clone(), first["version"].clone()),
        (json!(1700), json!(2))
    );
    assert_eq!(
        app.event_types(&format!("product-{}", product.id)).await,
        ["ProductCreated", "PriceChanged"]
    );
    // The same key on another product's price is another request.
    let other = app.create_product("Other", 100, 1).await;
    let key = Uuid::new_v4().to_string();
    let ok = post_keyed(&app, &path, &key, &json!({ "price_cents": 1800 })).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let reused = post_keyed(
        &app,
        &format!("/products/{}/price", other.id),
        &key,
        &json!({ "price_cents": 1800 }),
    )
    .await;
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = reused.json().await.expect("an error body");
    assert_eq!(error["error"], "idempotency_key_reused");
}

#[tokio::test]
async fn the_reservation_carries_the_idempotency_key_of_the_order() {
    let app = TestApp::spawn().await;
    let product = app.create_product("Grinder", 8000, 5).await;
    let order_id = Uuid::now_v7();

    app.publish_order_event(
        order_id,
        1,
        "OrderPlaced",
        &order_placed(order_id, &[(product.id, 2)]),
    )
    .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let reservation = loop {
        let events = app
            .db
            .store()
            .read_stream(&format!("reservation-{order_id}"), 1)
            .await
            .expect("read");
        if let Some(first) = events.into_iter().next() {
            break first;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reservation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        reservation.metadata.idempotency_key,
        Some(order_key(order_id))
    );
}

/// Two attempts of one request run at once when the first outlives its lease (a stalled
/// process) and a retry takes the key over. The ids derived from the key make the second land
/// on the store's idempotent append: it answers with the first's response and restocks nothing.
#[tokio::test]
async fn a_second_attempt_after_a_lapsed_lease_lands_on_the_first_attempts_events() {
    use event_store::aggregate::{Commands, Loaded, On};
    use event_store::idempotency::{claim, Claim, Kept};
    use product_service::domain::commands::ProductCommand;
    use product_service::domain::product::{Product, ProductState};

    let app = TestApp::spawn().await;
    let product = app.create_product("Press", 900, 1).await;
    let pool = &app.db.pool;
    let (key, fingerprint) = (Uuid::new_v4().to_string(), "restock-5".to_owned());
    let retention = Duration::from_secs(60);
    let Ok(Claim::Claimed(first)) =
        claim(pool, &key, &fingerprint, Duration::ZERO, retention).await
    else {
        panic!("the key is new")
    };
    let Ok(Claim::Claimed(second)) =
        claim(pool, &key, &fingerprint, Duration::from_secs(30), retention).await
    else {
        panic!("a lapsed lease is taken over")
    };
    let commands = Commands::<Product>::new(app.db.store());
    let respond = |done: &Loaded<ProductState>| {
        Kept::json(200, None, &json!({ "stock": done.state.stock_available }))
    };
    let restock = ProductCommand::Restock { quantity: 5 };
    let metadata = event_store::Metadata::default();

    let one = commands
        .execute(
            On::Existing(product.id),
            restock.clone(),
            &metadata,
            Some(&first),
            &respond,
        )
        .await
        .expect("the first attempt");
    let two = commands
        .execute(
            On::Existing(product.id),
            restock,
            &metadata,
            Some(&second),
            &respond,
        )
        .await
        .expect("the second attempt");

    assert_eq!(one.body, two.body);
    assert!(two.replayed);
    assert_eq!(
        app.event_types(&format!("product-{}", product.id)).await,
        ["ProductCreated", "ProductRestocked"]
    );
}

#[tokio::test]
async fn every_state_changing_route_documents_the_key_and_its_answers() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/openapi.json").await.json().await.expect("json");
    for path in [
        "/products",
        "/products/{id}/price",
        "/products/{id}/restock",
    ] {
        let post = &doc["paths"][path]["post"];
        let header = post["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap_or_else(|| panic!("{path} takes no Idempotency-Key: {post}"));
        assert_eq!(header["in"], "header");
        for status in ["400", "409", "422"] {
            assert!(post["responses"][status].is_object(), "{path} {status}");
        }
    }
}
