use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{id_of, TestApp, PATIENCE};

#[tokio::test]
async fn a_confirmed_reservation_confirms_the_order_and_it_can_still_be_cancelled() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 10).await;
    let order = app.placed("alice", &[(widget, 2)]).await;
    let id = id_of(&order);

    let cause = app.confirm_reservation(&order).await;

    let confirmed = app.order_with_status(&id, "confirmed").await;
    assert_eq!(confirmed["version"], 2);
    assert!(confirmed.get("rejection_reason").is_none(), "{confirmed}");
    let events = app
        .store()
        .read_stream(&format!("order-{id}"), 2)
        .await
        .unwrap();
    assert_eq!(events[0].event_type, "OrderConfirmed");
    let metadata = &events[0].metadata;
    assert_eq!(metadata.causation_id, Some(cause.to_string()));
    assert_eq!(metadata.correlation_id, Some(format!("test-{cause}")));

    let cancelled = app.cancel(&id).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let body: Value = cancelled.json().await.unwrap();
    assert_eq!(
        (body["status"].clone(), body["version"].clone()),
        (json!("cancelled"), json!(3))
    );
}

#[tokio::test]
async fn a_rejected_reservation_rejects_the_order_with_the_reason() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 1).await;
    let confirmed = app.placed("alice", &[(widget, 1)]).await;
    app.confirm_reservation(&confirmed).await;
    let order = app.placed("bob", &[(widget, 5)]).await;
    let id = id_of(&order);

    app.publish_product_event(
        &format!("reservation-{id}"),
        1,
        "ReservationRejected",
        json!({ "order_id": id, "product_id": widget, "reason": "insufficient stock",
                "requested": 5, "available": 0 }),
    )
    .await;

    let rejected = app.order_with_status(&id, "rejected").await;
    assert_eq!(rejected["rejection_reason"], "insufficient stock");
    assert_eq!(rejected["version"], 2);
    let cancel = app.cancel(&id).await;
    assert_eq!(cancel.status(), StatusCode::CONFLICT);
    let body: Value = cancel.json().await.unwrap();
    assert_eq!(body["error"], "invalid_transition");
    assert_eq!(body["message"], "cannot cancel an order that is rejected");
    app.order_with_status(&id_of(&confirmed), "confirmed").await;
}

#[tokio::test]
async fn a_confirmation_after_a_cancellation_leaves_the_order_cancelled() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 10).await;
    let order = app.placed("alice", &[(widget, 1)]).await;
    let id = id_of(&order);
    assert_eq!(app.cancel(&id).await.status(), StatusCode::OK);

    app.confirm_reservation(&order).await;
    // A later event of the same product-service stream is applied only after the confirmation.
    app.publish_product_event(
        &format!("reservation-{id}"),
        2,
        "ReservationReleased",
        json!({ "order_id": id, "lines": [] }),
    )
    .await;
    crate::support::eventually("the reservation to be recorded", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE stream_id = $1")
            .bind(format!("reservation-{id}"))
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        (n == 2).then_some(())
    })
    .await;

    let read = app.order_with_status(&id, "cancelled").await;
    assert_eq!(read["version"], 2, "the confirmation appended nothing");
}

#[tokio::test]
async fn order_events_are_published_for_product_service() {
    let app = TestApp::spawn().await;
    let widget = app.create_product("Widget", 100, 10).await;
    let order = app.placed("alice", &[(widget, 3)]).await;
    let id = id_of(&order);

    let stream = app.js.get_stream(&app.names.own_stream).await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: format!("{}.order-{id}.>", app.names.own_subjects),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let message = tokio::time::timeout(PATIENCE, messages.next())
        .await
        .expect("OrderPlaced is published in time")
        .unwrap()
        .unwrap();

    assert_eq!(
        message.subject.as_str(),
        format!("{}.order-{id}.OrderPlaced", app.names.own_subjects)
    );
    let headers = message.headers.as_ref().unwrap();
    assert_eq!(headers.get("Es-Stream-Version").unwrap().as_str(), "1");
    // Written at OrderPlaced's current schema version, prices with their currency.
    assert_eq!(headers.get("Es-Schema-Version").unwrap().as_str(), "2");
    let payload: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(payload["order_id"], json!(id));
    let price = json!({ "amount_minor": 100, "currency": "USD" });
    assert_eq!(
        payload["lines"],
        json!([{ "product_id": widget, "quantity": 3, "unit_price": price }])
    );
    assert_eq!(
        payload["total"],
        json!({ "amount_minor": 300, "currency": "USD" })
    );
}
