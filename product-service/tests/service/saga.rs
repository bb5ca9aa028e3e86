use std::time::Duration;

use event_store::consumer::{ForeignEvent, HandleError, Reaction as _};
use futures::StreamExt as _;
use product_service::reactions::StockReservation;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{order_placed, TestApp, PATIENCE};

#[tokio::test]
async fn an_order_placed_reserves_its_stock_and_its_cancellation_releases_it() {
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

    let reserved = app.wait_for_product(product.id, |p| p.version >= 2).await;
    assert_eq!((reserved.stock_available, reserved.stock_reserved), (3, 2));
    let reservation = format!("reservation-{order_id}");
    assert_eq!(
        app.event_types(&reservation).await,
        ["ReservationConfirmed"]
    );
    let history: Vec<Value> = app
        .get(&format!("/products/{}/events", product.id))
        .await
        .json()
        .await
        .expect("a list");
    let reserved_event = &history[1];
    assert_eq!(reserved_event["type"], "StockReserved");
    assert_eq!(reserved_event["payload"]["quantity"], 2);
    assert_eq!(
        reserved_event["metadata"]["correlation_id"],
        format!("test-{order_id}")
    );
    assert!(reserved_event["metadata"]["causation_id"].is_string());

    app.publish_order_event(
        order_id,
        2,
        "OrderCancelled",
        &json!({ "order_id": order_id }),
    )
    .await;

    let released = app.wait_for_product(product.id, |p| p.version >= 3).await;
    assert_eq!((released.stock_available, released.stock_reserved), (5, 0));
    assert_eq!(
        app.event_types(&reservation).await,
        ["ReservationConfirmed", "ReservationReleased"]
    );
}

#[tokio::test]
async fn an_order_beyond_the_stock_is_rejected_naming_the_product_and_takes_nothing() {
    let app = TestApp::spawn().await;
    let plenty = app.create_product("Filter", 100, 50).await;
    let scarce = app.create_product("Scale", 4000, 1).await;
    let order_id = Uuid::now_v7();

    let lines = [(plenty.id, 1), (scarce.id, 2)];
    app.publish_order_event(order_id, 1, "OrderPlaced", &order_placed(order_id, &lines))
        .await;

    let rejection = wait_for_reservation(&app, order_id).await;
    assert_eq!(rejection.event_type, "ReservationRejected");
    assert_eq!(rejection.payload["product_id"], json!(scarce.id));
    assert_eq!(rejection.payload["requested"], 2);
    assert_eq!(rejection.payload["available"], 1);
    assert_eq!(
        app.event_types(&format!("product-{}", plenty.id)).await,
        ["ProductCreated"]
    );
    assert_eq!(
        app.event_types(&format!("product-{}", scarce.id)).await,
        ["ProductCreated"]
    );
}

#[tokio::test]
async fn the_same_order_delivered_twice_reserves_once() {
    let app = TestApp::spawn().await;
    let product = app.create_product("Tamper", 2500, 5).await;
    let order_id = Uuid::now_v7();
    let payload = order_placed(order_id, &[(product.id, 2)]);

    // Two messages with different ids: JetStream cannot de-duplicate them, the saga must.
    app.publish_order_event(order_id, 1, "OrderPlaced", &payload)
        .await;
    wait_for_reservation(&app, order_id).await;
    app.publish_order_event(order_id, 1, "OrderPlaced", &payload)
        .await;
    let marker = Uuid::now_v7();
    app.publish_order_event(
        marker,
        1,
        "OrderPlaced",
        &order_placed(marker, &[(product.id, 1)]),
    )
    .await;
    wait_for_reservation(&app, marker).await;

    let product = app.wait_for_product(product.id, |p| p.version >= 3).await;
    assert_eq!((product.stock_available, product.stock_reserved), (2, 3));
    assert_eq!(
        app.event_types(&format!("reservation-{order_id}")).await,
        ["ReservationConfirmed"]
    );
}

#[tokio::test]
async fn a_malformed_order_event_is_dead_lettered_and_does_not_stop_the_saga() {
    let app = TestApp::spawn().await;
    let product = app.create_product("Jug", 1500, 5).await;
    let mut dead_letters = app
        .nats
        .subscribe(format!("{}.deadletter.product-service", app.namespace))
        .await
        .expect("subscribed");
    let broken = Uuid::now_v7();

    app.publish_order_event(
        broken,
        1,
        "OrderPlaced",
        &json!({ "order_id": "not a uuid" }),
    )
    .await;
    let good = Uuid::now_v7();
    app.publish_order_event(
        good,
        1,
        "OrderPlaced",
        &order_placed(good, &[(product.id, 1)]),
    )
    .await;

    let dead = tokio::time::timeout(PATIENCE, dead_letters.next())
        .await
        .expect("a dead letter in time")
        .expect("a message");
    assert!(dead
        .subject
        .as_str()
        .ends_with("deadletter.product-service"));
    assert_eq!(
        wait_for_reservation(&app, good).await.event_type,
        "ReservationConfirmed"
    );
}

#[tokio::test]
async fn racing_orders_never_take_more_than_the_stock() {
    let app = TestApp::spawn().await;
    let product = app.create_product("Limited edition", 9900, 10).await;
    let orders: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();

    let mut acks = Vec::new();
    for order_id in &orders {
        let payload = order_placed(*order_id, &[(product.id, 1)]);
        acks.push(
            app.send_order_event(*order_id, 1, "OrderPlaced", &payload)
                .await,
        );
    }
    for ack in acks {
        ack.await.expect("JetStream stored the event");
    }

    let mut outcomes = Vec::new();
    for order_id in &orders {
        outcomes.push(wait_for_reservation(&app, *order_id).await.event_type);
    }
    let confirmed = outcomes
        .iter()
        .filter(|t| *t == "ReservationConfirmed")
        .count();
    let rejected = outcomes
        .iter()
        .filter(|t| *t == "ReservationRejected")
        .count();
    assert_eq!((confirmed, rejected), (10, 10));

    let after = app.product(product.id, 11).await;
    assert_eq!((after.stock_available, after.stock_reserved), (0, 10));
    // Replaying the stream, the available stock never dipped below zero.
    let history: Vec<Value> = app
        .get(&format!("/products/{}/events", product.id))
        .await
        .json()
        .await
        .expect("a list");
    let mut available = 0;
    for event in &history {
        match event["type"].as_str() {
            Some("ProductCreated") => {
                available = event["payload"]["initial_stock"].as_i64().unwrap_or(0)
            }
            Some("StockReserved") => {
                available -= event["payload"]["quantity"].as_i64().unwrap_or(0)
            }
            _ => {}
        }
        assert!(available >= 0, "stock went negative at {event}");
    }
}

/// Waits for the first event of the order's reservation stream.
async fn wait_for_reservation(app: &TestApp, order_id: Uuid) -> event_store::RecordedEvent {
    let stream = format!("reservation-{order_id}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let events = app.db.store().read_stream(&stream, 1).await.expect("read");
        if let Some(first) = events.into_iter().next() {
            return first;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reservation decision for {order_id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The consumer handles one message at a time; replicas do not. Here 20 reactions run in
/// concurrent transactions, as on 20 replicas, each retried on conflict as the consumer would.
#[tokio::test]
async fn concurrent_reservations_conflict_and_retry_instead_of_overselling() {
    event_store::testing::init_tracing();
    let db = event_store::testing::TestDb::new().await;
    let store = db.store();
    let product_id = Uuid::now_v7();
    let create = product_service::domain::commands::ProductCommand::CreateProduct {
        product_id,
        name: "Contested".to_owned(),
        price_cents: 100,
        currency: "USD".to_owned(),
        stock: 10,
    };
    event_store::aggregate::Commands::<product_service::domain::product::Product>::new(
        store.clone(),
    )
    .execute(
        event_store::aggregate::On::New(product_id),
        create,
        &event_store::Metadata::default(),
        None,
        &|_| event_store::idempotency::Kept::json(201, None, &()),
    )
    .await
    .expect("created");
    let reaction = std::sync::Arc::new(StockReservation::new(store.clone()));

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (pool, reaction) = (db.pool.clone(), reaction.clone());
        tasks.push(tokio::spawn(async move {
            let order_id = Uuid::now_v7();
            let event = ForeignEvent {
                event_id: Uuid::now_v7(),
                event_type: "OrderPlaced".to_owned(),
                stream_id: format!("order-{order_id}"),
                stream_version: 1,
                source_position: 1,
                schema_version: 1,
                payload: order_placed(order_id, &[(product_id, 1)]),
                metadata: event_store::Metadata::default(),
            };
            let mut conflicts = 0;
            loop {
                let mut tx = pool.begin().await.expect("a transaction");
                match reaction.handle(&mut tx, &event).await {
                    Ok(()) => {
                        tx.commit().await.expect("committed");
                        return conflicts;
                    }
                    Err(HandleError::Conflict(_) | HandleError::Transient(_)) => conflicts += 1,
                    Err(HandleError::Poison(e) | HandleError::NewerSchema(e)) => {
                        panic!("unreadable: {e}")
                    }
                }
            }
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.expect("the task finished");
    }

    let product = store
        .read_stream(&format!("product-{product_id}"), 1)
        .await
        .expect("read");
    let reserved = product
        .iter()
        .filter(|e| e.event_type == "StockReserved")
        .count();
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM events WHERE stream_id LIKE 'reservation-%'")
            .fetch_all(&db.pool)
            .await
            .expect("outcomes");
    let confirmed = outcomes
        .iter()
        .filter(|t| *t == "ReservationConfirmed")
        .count();
    let rejected = outcomes
        .iter()
        .filter(|t| *t == "ReservationRejected")
        .count();
    assert_eq!((reserved, confirmed, rejected), (10, 10, 10));
    tracing::info!(conflicts, "retries caused by concurrent reservations");
}
