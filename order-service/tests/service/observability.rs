//! `/metrics`, readiness that fails while a reader is stuck, and one correlation id through
//! the order's events.
//!
//! The `orders` read model is written in each append's transaction (inline), so it has no
//! projector, no checkpoint and no lag; the relay is the store's one reader.

use reqwest::StatusCode;
use serde_json::{json, Value};
use service_kit::prometheus::sample;
use sqlx::Connection;

use crate::support::{eventually, id_of, TestApp};

async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_appends_time_requests_by_route_and_show_the_readers_caught_up() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 10).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(id_of(&app.placed("alice", &[(widget, 1)]).await));
    }
    // The read model is written with the order: a plain read right after sees it.
    let read = app.get(&format!("/orders/{}", ids[0])).await;
    assert_eq!(read.status(), 200);

    let text = eventually("the relay and projections to catch up", || async {
        let text = scrape(&app).await;
        let caught_up = [
            ("es_relay_lag_events", vec![]),
            ("es_relay_lag_seconds", vec![]),
        ]
        .iter()
        .all(|(name, labels)| sample(&text, name, labels) == Some(0.0));
        caught_up.then_some(text)
    })
    .await;

    let service = ("service", "order-service");
    let appended = sample(
        &text,
        "es_events_appended_total",
        &[service, ("category", "order")],
    );
    assert!(appended.is_some_and(|n| n >= 3.0), "{text}");
    let head = sample(&text, "es_head_position", &[service]).unwrap();
    assert!(head > 0.0);
    assert_eq!(
        sample(
            &text,
            "es_projection_checkpoint",
            &[("projection", "orders")]
        ),
        None,
        "an inline projection has no checkpoint to lag behind"
    );
    assert_eq!(sample(&text, "es_relay_position", &[]), Some(head));
    let applied = sample(
        &text,
        "es_consumer_messages_total",
        &[("consumer", "order-service"), ("outcome", "applied")],
    );
    assert!(applied.is_some_and(|n| n >= 1.0), "{text}");
    let posted = sample(
        &text,
        "http_request_duration_seconds_count",
        &[("method", "POST"), ("route", "/orders"), ("status", "2xx")],
    );
    assert!(posted.is_some_and(|n| n >= 3.0), "{text}");
    let by_pattern = [("route", "/orders/{id}"), ("le", "+Inf")];
    assert!(
        sample(&text, "http_request_duration_seconds_bucket", &by_pattern)
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(!text.contains(&ids[0]), "a raw path became a label: {text}");
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["paths"]["/metrics"]["get"].is_object());
}

#[tokio::test]
async fn readiness_fails_while_the_relay_is_stuck_and_recovers_after() {
    let app = TestApp::spawn_with(&event_store::testing::nats_url(), |config| {
        config.common.ready_max_lag_seconds = 1;
    })
    .await;
    let widget = app.create_product("Widget", 100, 10).await;
    eventually("readiness", || async {
        (app.get("/health/ready").await.status() == 200).then_some(())
    })
    .await;

    // Holds every checkpoint where it is: readers may read, no reader may advance.
    let mut conn = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    let mut hold = conn.begin().await.unwrap();
    sqlx::query("LOCK TABLE checkpoints IN EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();
    app.placed("alice", &[(widget, 1)]).await;

    let body: Value = eventually("readiness to fail", || async {
        let response = app.get("/health/ready").await;
        if response.status() != StatusCode::SERVICE_UNAVAILABLE {
            return None;
        }
        response.json().await.ok()
    })
    .await;
    assert_eq!(
        (body["database"].clone(), body["nats"].clone()),
        (json!("up"), json!("up")),
        "{body}"
    );
    let behind = body["behind"].as_array().unwrap();
    assert!(
        behind
            .iter()
            .any(|b| b.as_str().unwrap().starts_with("relay")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("behind"));

    hold.rollback().await.unwrap();
    eventually("readiness to return", || async {
        (app.get("/health/ready").await.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_request_id_and_trace_context_go_into_the_order_and_its_outcome() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 10).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    let response = app
        .http
        .post(app.url("/orders"))
        .header("X-Request-Id", "checkout-7")
        .header("traceparent", traceparent)
        .json(
            &json!({ "customer_id": "alice", "lines": [{ "product_id": widget, "quantity": 1 }] }),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-request-id"], "checkout-7");
    let order: Value = response.json().await.unwrap();
    let events = app
        .store()
        .read_stream(&format!("order-{}", id_of(&order)), 1)
        .await
        .unwrap();
    assert_eq!(
        events[0].metadata.correlation_id.as_deref(),
        Some("checkout-7")
    );
    assert_eq!(events[0].metadata.traceparent.as_deref(), Some(traceparent));
}
