use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{id_of, TestApp};

#[tokio::test]
async fn placing_an_order_prices_it_from_the_catalogue() {
    let app = TestApp::spawn().await;
    let (widget, gadget) = (
        app.create_product("Widget", 250, 10).await,
        app.create_product("Gadget", 1000, 10).await,
    );

    let response = app
        .http
        .post(app.url("/orders"))
        .header("X-Request-Id", "req-42")
        .json(&json!({ "customer_id": " alice ", "lines": [
            { "product_id": widget, "quantity": 2 },
            { "product_id": gadget, "quantity": 1 },
        ]}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = response.json().await.unwrap();
    let id = id_of(&order);
    assert_eq!(location, format!("/orders/{id}"));
    let expected_lines = json!([
        { "product_id": widget, "quantity": 2, "unit_price_cents": 250 },
        { "product_id": gadget, "quantity": 1, "unit_price_cents": 1000 },
    ]);
    let expected = json!({
        "id": id, "customer_id": "alice", "status": "pending", "lines": expected_lines,
        "total_cents": 1500, "currency": "USD", "version": 1,
    });
    assert_eq!(order, expected);

    let read: Value = app
        .get(&format!("{location}?min_version=1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read, expected);
    let events = app
        .store()
        .read_stream(&format!("order-{id}"), 1)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "OrderPlaced");
    assert_eq!(events[0].metadata.correlation_id.as_deref(), Some("req-42"));
}

#[tokio::test]
async fn an_order_naming_an_unknown_product_is_refused_naming_it() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 250, 10).await;
    let unknown = Uuid::new_v4();

    let response = app.place_order("alice", &[(widget, 1), (unknown, 1)]).await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unknown_product");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&unknown.to_string()),
        "{body}"
    );
    assert!(
        !body["message"]
            .as_str()
            .unwrap()
            .contains(&widget.to_string()),
        "{body}"
    );
    assert_eq!(
        app.store().head_position().await.unwrap(),
        0,
        "nothing was appended"
    );
}

#[tokio::test]
async fn cancelling_a_pending_order_cancels_it() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 250, 10).await;
    let order = app.placed("alice", &[(widget, 1)]).await;
    let id = id_of(&order);

    let response = app.cancel(&id).await;

    assert_eq!(response.status(), StatusCode::OK);
    let cancelled: Value = response.json().await.unwrap();
    assert_eq!(
        (cancelled["status"].clone(), cancelled["version"].clone()),
        (json!("cancelled"), json!(2))
    );
    let read: Value = app
        .get(&format!("/orders/{id}?min_version=2"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read, cancelled);
    let again = app.cancel(&id).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"], "invalid_transition");
}

#[tokio::test]
async fn orders_are_listed_newest_first_per_customer() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 10).await;
    let first = id_of(&app.placed("alice", &[(widget, 1)]).await);
    let other = id_of(&app.placed("bob", &[(widget, 1)]).await);
    let second = id_of(&app.placed("alice", &[(widget, 2)]).await);
    app.order_with_status(&second, "pending").await;
    app.order_with_status(&other, "pending").await;

    let alice: Value = app
        .get("/orders?customer_id=alice")
        .await
        .json()
        .await
        .unwrap();
    let everyone: Value = app.get("/orders?limit=2").await.json().await.unwrap();

    let ids = |list: &Value| -> Vec<String> {
        list["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(id_of)
            .collect()
    };
    assert_eq!(ids(&alice), vec![second.clone(), first]);
    assert_eq!(ids(&everyone), vec![second, other]);
}

#[tokio::test]
async fn a_read_that_cannot_reach_min_version_answers_stale() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 10).await;
    let id = id_of(&app.placed("alice", &[(widget, 1)]).await);
    app.order_with_status(&id, "pending").await;

    let response = app.get(&format!("/orders/{id}?min_version=9")).await;
    let missing = app
        .get(&format!("/orders/{}?min_version=1", Uuid::new_v4()))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-stale"], "true");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_order_takes_its_products_currency_and_mixing_currencies_is_refused() {
    let app = TestApp::spawn().await;
    let dollars = app.create_product("Widget", 250, 10).await;
    let (euros, more_euros) = (Uuid::new_v4(), Uuid::new_v4());
    for (id, cents) in [(euros, 900), (more_euros, 100)] {
        let price = json!({ "amount_minor": cents, "currency": "EUR" });
        let created = json!({ "product_id": id, "name": "Moka pot", "price": price,
                              "initial_stock": 5 });
        app.publish_product_event_at(&format!("product-{id}"), 1, "ProductCreated", 2, created)
            .await;
        app.catalogue_entry(id, 1).await;
    }

    let lines = json!([{ "product_id": euros, "quantity": 2 },
                       { "product_id": more_euros, "quantity": 1 }]);
    let response = app
        .post(
            "/orders",
            &json!({ "customer_id": "alice", "lines": lines }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    assert_eq!(
        (&order["total_cents"], &order["currency"]),
        (&json!(1900), &json!("EUR"))
    );

    let lines = json!([{ "product_id": euros, "quantity": 1 },
                       { "product_id": dollars, "quantity": 1 }]);
    let response = app
        .post(
            "/orders",
            &json!({ "customer_id": "alice", "lines": lines }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "validation_failed");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("USD") && message.contains("EUR"),
        "{message}"
    );
}
