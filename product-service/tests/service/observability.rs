//! `/metrics`, and readiness that fails while a reader is stuck.

use service_kit::prometheus::sample;

use serde_json::{json, Value};
use sqlx::Connection;
use uuid::Uuid;

use crate::support::{eventually, order_placed, TestApp};

async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    response.text().await.expect("a text body")
}

#[tokio::test]
async fn metrics_count_appends_time_requests_by_route_and_show_the_readers_caught_up() {
    let app = TestApp::spawn().await;
    let created = app.create_product("Kettle", 4000, 5).await;
    app.post(
        &format!("/products/{}/restock", created.id),
        &json!({ "quantity": 3 }),
    )
    .await;
    app.create_product("Cup", 500, 9).await;

    let text = eventually("the relay to catch up", || async {
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

    let service = ("service", "product-service");
    let appended = sample(
        &text,
        "es_events_appended_total",
        &[service, ("category", "product")],
    );
    assert!(appended.is_some_and(|n| n >= 3.0), "{text}");
    let head = sample(&text, "es_head_position", &[service]).expect("the head");
    assert!(head > 0.0);
    // `products` is written by each append (inline): no projector, no checkpoint, no lag.
    assert_eq!(
        sample(
            &text,
            "es_projection_checkpoint",
            &[("projection", "products")]
        ),
        None
    );
    assert_eq!(sample(&text, "es_relay_position", &[]), Some(head));
    let restocks = [
        ("method", "POST"),
        ("route", "/products/{id}/restock"),
        ("status", "2xx"),
    ];
    assert!(
        sample(&text, "http_request_duration_seconds_count", &restocks).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        !text.contains(&created.id.to_string()),
        "a raw path became a label: {text}"
    );
}

#[tokio::test]
async fn a_dead_lettered_message_is_counted() {
    let app = TestApp::spawn().await;
    let dead = [("consumer", "product-service")];
    let before = sample(&scrape(&app).await, "es_dead_letters_total", &dead).unwrap_or(0.0);
    let order_id = Uuid::now_v7();

    app.publish_order_event(
        order_id,
        1,
        "OrderPlaced",
        &json!({ "order_id": "not a uuid" }),
    )
    .await;

    eventually("the dead letter to be counted", || async {
        let after = sample(&scrape(&app).await, "es_dead_letters_total", &dead)?;
        (after > before).then_some(())
    })
    .await;
}

#[tokio::test]
async fn readiness_fails_while_the_relay_is_stuck_and_recovers_after() {
    let app = TestApp::spawn_with(|config| config.common.ready_max_lag_seconds = 1).await;
    let ready = || async { (app.get("/health/ready").await.status() == 200).then_some(()) };
    eventually("readiness", ready).await;

    // Holds every checkpoint where it is: readers may read, no reader may advance.
    let mut conn = sqlx::PgConnection::connect(&app.db.url)
        .await
        .expect("a connection");
    let mut hold = conn.begin().await.expect("a transaction");
    sqlx::query("LOCK TABLE checkpoints IN EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .expect("the lock");
    app.create_product("Kettle", 4000, 5).await;

    let body: Value = eventually("readiness to fail", || async {
        let response = app.get("/health/ready").await;
        if response.status() != 503 {
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
    let behind = body["behind"].as_array().expect("a list of readers");
    assert!(
        behind
            .iter()
            .any(|b| b.as_str().is_some_and(|b| b.starts_with("relay"))),
        "{body}"
    );

    hold.rollback().await.expect("released");
    eventually("readiness to return", ready).await;
}

#[tokio::test]
async fn a_second_event_claiming_a_recorded_version_is_dead_lettered_counted_and_named_by_readiness(
) {
    let app = TestApp::spawn().await;
    let product = app.create_product("Kettle", 4000, 5).await;
    let order_id = Uuid::now_v7();
    let placed = order_placed(order_id, &[(product.id, 1)]);
    app.publish_order_event(order_id, 1, "OrderPlaced", &placed)
        .await;
    app.wait_for_product(product.id, |p| p.stock_reserved == 1)
        .await;

    // Another event at version 1 of the same stream: a forged message, or order-service
    // restored from a backup and writing new events at versions already received.
    app.publish_order_event(
        order_id,
        1,
        "OrderCancelled",
        &json!({ "order_id": order_id }),
    )
    .await;

    let conflict = [
        ("consumer", "product-service"),
        ("kind", "version_conflict"),
    ];
    eventually("the conflict to be counted", || async {
        let counted = sample(&scrape(&app).await, "es_dead_letters_total", &conflict)?;
        (counted == 1.0).then_some(())
    })
    .await;
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200, "it still serves");
    let body: Value = ready.json().await.expect("a JSON body");
    assert_eq!(body["version_conflicts"]["count"], 1, "{body}");
    let named = body["version_conflicts"]["latest"][0]
        .as_str()
        .unwrap_or_default();
    assert!(named.contains(&format!("order-{order_id}")), "{body}");
    let product = app.product(product.id, 1).await;
    assert_eq!(
        product.stock_reserved, 1,
        "the conflicting event had no effect"
    );
}
