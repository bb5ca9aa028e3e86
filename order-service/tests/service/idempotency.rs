//! `Idempotency-Key`: a retried or repeated write is taken once, and answered as the first time.

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use service_kit::config::Retention;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::support::{eventually, id_of, TestApp};

fn order_body(customer: &str, product: Uuid, quantity: i64) -> Value {
    json!({ "customer_id": customer, "lines": [{ "product_id": product, "quantity": quantity }] })
}

async fn post_keyed(app: &TestApp, path: &str, key: &str, body: &Value) -> Response {
    app.http
        .post(app.url(path))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn replayed(response: &Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// How many events of `event_type` the service's store holds.
async fn count(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// Messages the relay published to JetStream on this service's stream.
async fn published(app: &TestApp) -> u64 {
    let mut stream = app.js.get_stream(&app.names.own_stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test]
async fn a_retry_after_the_client_gave_up_names_the_same_order_and_places_it_once() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 250, 10).await;
    let key = format!("gave-up-{}", Uuid::new_v4());
    let body = order_body("alice", widget, 2).to_string();

    // The client sends the request and goes away before any answer.
    let address = app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST /orders HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Idempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    drop(socket);
    // The server carried on: the order is placed.
    eventually("the order to be placed", || async {
        (count(&app, "OrderPlaced").await == 1).then_some(())
    })
    .await;

    // The retry: the first answer, and the same order.
    let retry = eventually("the first request to finish", || async {
        let r = post_keyed(&app, "/orders", &key, &serde_json::from_str(&body).unwrap()).await;
        (r.status() != StatusCode::CONFLICT).then_some(r)
    })
    .await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert!(replayed(&retry));
    let location = retry.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = retry.json().await.unwrap();
    assert_eq!(location, format!("/orders/{}", id_of(&order)));
    let stored = app
        .store()
        .read_stream(&format!("order-{}", id_of(&order)), 1)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "one OrderPlaced, under the answered id");
    assert_eq!(stored[0].metadata.idempotency_key.as_deref(), Some(&*key));
    assert_eq!(count(&app, "OrderPlaced").await, 1);
    // One event published, so product-service reserves once.
    eventually("one event published", || async {
        (published(&app).await == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn fifty_concurrent_identical_requests_with_one_key_place_one_order() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 100).await;
    let key = Uuid::new_v4().to_string();
    let body = order_body("bob", widget, 1);

    let answers = futures::future::join_all((0..50).map(|_| async {
        let r = post_keyed(&app, "/orders", &key, &body).await;
        let status = r.status();
        (status, r.json::<Value>().await.unwrap())
    }))
    .await;

    let placed: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, b)| b)
        .collect();
    assert!(!placed.is_empty(), "{answers:?}");
    assert!(placed.iter().all(|b| *b == placed[0]), "one response");
    for (status, body) in &answers {
        match *status {
            StatusCode::CREATED => {}
            StatusCode::CONFLICT => assert_eq!(body["error"], "idempotency_key_in_flight"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(count(&app, "OrderPlaced").await, 1);
    let later = post_keyed(&app, "/orders", &key, &body).await;
    assert!(replayed(&later));
    assert_eq!(&later.json::<Value>().await.unwrap(), placed[0]);
    eventually("one event published", || async {
        (published(&app).await == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_same_key_on_another_request_is_422_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 10).await;
    let key = Uuid::new_v4().to_string();
    let first = post_keyed(&app, "/orders", &key, &order_body("carol", widget, 1)).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let order: Value = first.json().await.unwrap();

    let other_body = post_keyed(&app, "/orders", &key, &order_body("carol", widget, 2)).await;
    let other_route = post_keyed(
        &app,
        &format!("/orders/{}/cancel", id_of(&order)),
        &key,
        &json!({}),
    )
    .await;

    for response in [other_body, other_route] {
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "idempotency_key_reused");
        assert!(error["message"].as_str().unwrap().contains(&key), "{error}");
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(events, 1, "only the first order");
    assert_eq!(
        app.get(&format!("/orders/{}", id_of(&order)))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn malformed_keys_are_400() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 10).await;
    for key in ["has space", &"k".repeat(256), "ünïcode"] {
        let response = app
            .http
            .post(app.url("/orders"))
            .header("Idempotency-Key", key.as_bytes())
            .json(&order_body("dan", widget, 1))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{key:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "invalid_idempotency_key");
    }
    assert_eq!(count(&app, "OrderPlaced").await, 0);
}

#[tokio::test]
async fn after_its_retention_a_key_is_new_again() {
    let app = TestApp::spawn_with(&event_store::testing::nats_url(), |config| {
        config.common.idempotency_retention = Retention(Duration::from_secs(1));
    })
    .await;
    let widget = app.create_product("Widget", 100, 10).await;
    let key = Uuid::new_v4().to_string();
    let body = order_body("erin", widget, 1);
    let first: Value = post_keyed(&app, "/orders", &key, &body)
        .await
        .json()
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = post_keyed(&app, "/orders", &key, &body).await;

    assert_eq!(again.status(), StatusCode::CREATED);
    assert!(!replayed(&again));
    let second: Value = again.json().await.unwrap();
    assert_ne!(id_of(&first), id_of(&second), "a new order");
    assert_eq!(count(&app, "OrderPlaced").await, 2);
}

#[tokio::test]
async fn a_kept_response_is_replayed_after_a_restart() {
    let mut app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 10).await;
    let key = Uuid::new_v4().to_string();
    let body = order_body("frank", widget, 3);
    let first = post_keyed(&app, "/orders", &key, &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_body = first.bytes().await.unwrap();

    app.restart().await;
    let again = post_keyed(&app, "/orders", &key, &body).await;

    assert_eq!(again.status(), StatusCode::CREATED);
    assert!(replayed(&again));
    assert_eq!(again.bytes().await.unwrap(), first_body, "byte for byte");
    assert_eq!(count(&app, "OrderPlaced").await, 1);
}

#[tokio::test]
async fn cancelling_under_a_key_is_done_once_and_answered_alike() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 10).await;
    let order = app.placed("gina", &[(widget, 1)]).await;
    let path = format!("/orders/{}/cancel", id_of(&order));
    let key = Uuid::new_v4().to_string();

    let first = post_keyed(&app, &path, &key, &json!({})).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let again = post_keyed(&app, &path, &key, &json!({})).await;

    // Without the key a second cancel would be 409 invalid_transition.
    assert_eq!(again.status(), StatusCode::OK);
    assert!(replayed(&again));
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(first["status"], "cancelled");
    assert_eq!(count(&app, "OrderCancelled").await, 1);
}

#[tokio::test]
async fn every_state_changing_route_documents_the_key_and_its_answers() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    for path in ["/orders", "/orders/{id}/cancel"] {
        let post = &doc["paths"][path]["post"];
        let header = post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap_or_else(|| panic!("{path} takes no Idempotency-Key: {post}"));
        assert_eq!(header["in"], "header");
        assert_eq!(header["required"], false);
        for status in ["400", "409", "422"] {
            assert!(post["responses"][status].is_object(), "{path} {status}");
        }
    }
}
