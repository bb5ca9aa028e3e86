//! order-service's events at both schema versions, interleaved, as during a rolling upgrade of
//! order-service: `OrderPlaced` version 1 (`unit_price_cents`, `total_cents`) and version 2
//! (`Money`) reserve stock alike, in the order they were written.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{eventually, TestApp};

fn placed_v1(order_id: Uuid, lines: &[(Uuid, i64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(product_id, quantity)| {
            json!({ "product_id": product_id, "quantity": quantity, "unit_price_cents": 250 })
        })
        .collect();
    let total: i64 = lines
        .iter()
        .map(|l| l["quantity"].as_i64().unwrap_or(0) * 250)
        .sum();
    json!({ "order_id": order_id, "customer_id": "ann", "lines": lines, "total_cents": total })
}

fn placed_v2(order_id: Uuid, lines: &[(Uuid, i64)]) -> Value {
    let money = |amount: i64| json!({ "amount_minor": amount, "currency": "USD" });
    let lines: Vec<Value> = lines
        .iter()
        .map(|(product_id, quantity)| {
            json!({ "product_id": product_id, "quantity": quantity, "unit_price": money(250) })
        })
        .collect();
    let total: i64 = lines
        .iter()
        .map(|l| l["quantity"].as_i64().unwrap_or(0) * 250)
        .sum();
    json!({ "order_id": order_id, "customer_id": "bob", "lines": lines, "total": money(total) })
}

/// `(event type, order id, quantity)` of a product's stream after its creation.
async fn stock_moves(app: &TestApp, product: Uuid) -> Vec<(String, Uuid, i64)> {
    let events = app
        .db
        .store()
        .read_stream(&format!("product-{product}"), 2)
        .await
        .expect("reading a product stream");
    events
        .into_iter()
        .map(|e| {
            let order: Uuid = serde_json::from_value(e.payload["order_id"].clone())
                .expect("a stock event names its order");
            let quantity = e.payload["quantity"].as_i64().expect("a quantity");
            (e.event_type, order, quantity)
        })
        .collect()
}

/// The reservation stream of an order once it holds `count` events.
async fn reservation(
    app: &TestApp,
    order_id: Uuid,
    count: usize,
) -> Vec<event_store::RecordedEvent> {
    let stream = format!("reservation-{order_id}");
    eventually(&format!("{stream} to hold {count} events"), || async {
        let events = app.db.store().read_stream(&stream, 1).await.expect("read");
        (events.len() >= count).then_some(events)
    })
    .await
}

fn types(events: &[event_store::RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

#[tokio::test]
async fn orders_placed_at_versions_1_and_2_interleaved_reserve_stock_in_the_order_written() {
    let app = TestApp::spawn().await;
    let beans = app.create_product("Beans", 1200, 10).await.id;
    let grinder = app.create_product("Grinder", 9000, 4).await.id;
    let [a, b, c, d, e] = [(); 5].map(|_| Uuid::now_v7());
    let mut e_placed = placed_v2(e, &[(beans, 1)]);
    // Fields product-service does not read, as a later order-service might add.
    e_placed["shipping"] = json!({ "amount_minor": 500, "currency": "USD" });

    app.publish_order_event_at(a, 1, "OrderPlaced", 1, &placed_v1(a, &[(beans, 3)]))
        .await;
    let b_lines = [(beans, 2), (grinder, 1)];
    app.publish_order_event_at(b, 1, "OrderPlaced", 2, &placed_v2(b, &b_lines))
        .await;
    app.publish_order_event_at(c, 1, "OrderPlaced", 1, &placed_v1(c, &[(grinder, 2)]))
        .await;
    app.publish_order_event_at(b, 2, "OrderCancelled", 1, &json!({ "order_id": b }))
        .await;
    // More grinders than there ever were.
    app.publish_order_event_at(d, 1, "OrderPlaced", 2, &placed_v2(d, &[(grinder, 5)]))
        .await;
    app.publish_order_event_at(e, 1, "OrderPlaced", 2, &e_placed)
        .await;

    let outcomes = [
        (a, 1, vec!["ReservationConfirmed"]),
        (b, 2, vec!["ReservationConfirmed", "ReservationReleased"]),
        (c, 1, vec!["ReservationConfirmed"]),
        (d, 1, vec!["ReservationRejected"]),
        (e, 1, vec!["ReservationConfirmed"]),
    ];
    for (order, count, expected) in &outcomes {
        let events = reservation(&app, *order, *count).await;
        assert_eq!(types(&events), *expected, "order {order}");
    }
    let rejection = &reservation(&app, d, 1).await[0].payload;
    assert_eq!(rejection["product_id"], json!(grinder));
    assert_eq!(
        (
            rejection["requested"].clone(),
            rejection["available"].clone()
        ),
        (json!(5), json!(2))
    );

    let beans_now = app.wait_for_product(beans, |p| p.version >= 5).await;
    let grinder_now = app.wait_for_product(grinder, |p| p.version >= 4).await;
    assert_eq!(
        (beans_now.stock_available, beans_now.stock_reserved),
        (6, 4)
    );
    assert_eq!(
        (grinder_now.stock_available, grinder_now.stock_reserved),
        (2, 2)
    );
    let (reserved, released) = ("StockReserved".to_owned(), "StockReleased".to_owned());
    assert_eq!(
        stock_moves(&app, beans).await,
        [
            (reserved.clone(), a, 3),
            (reserved.clone(), b, 2),
            (released.clone(), b, 2),
            (reserved.clone(), e, 1),
        ]
    );
    assert_eq!(
        stock_moves(&app, grinder).await,
        [(reserved.clone(), b, 1), (reserved, c, 2), (released, b, 1)]
    );
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&app.db.pool)
        .await
        .expect("counting dead letters");
    assert_eq!(dead, 0);
    let received: Vec<(String, i64, i32)> = sqlx::query_as(
        "SELECT event_type, stream_version, schema_version FROM inbox WHERE stream_id = $1 \
         ORDER BY stream_version",
    )
    .bind(format!("order-{b}"))
    .fetch_all(&app.db.pool)
    .await
    .expect("reading the inbox");
    assert_eq!(
        received,
        [
            ("OrderPlaced".to_owned(), 1, 2),
            ("OrderCancelled".to_owned(), 2, 1)
        ]
    );
}

/// A newer replica of this service wrote an event this one cannot read (a rolling upgrade of
/// product-service itself): a command on that product is a 503 to retry, not a 500, and
/// changes nothing.
#[tokio::test]
async fn a_command_on_a_stream_holding_a_newer_version_it_cannot_read_is_503() {
    use event_store::{EventStore, ExpectedVersion, NewEvent};

    let app = TestApp::spawn().await;
    let created = app.create_product("Kettle", 5000, 3).await;
    // Written beside the service, as the newer replica would, without this code's read model.
    let newer = NewEvent::new(
        "PriceChanged",
        json!({ "product_id": created.id, "price": { "minor": 4500, "unit": "EUR" } }),
    )
    .with_schema_version(3);
    EventStore::new(app.db.pool.clone())
        .append(
            &format!("product-{}", created.id),
            ExpectedVersion::Exact(1),
            &[newer],
        )
        .await
        .expect("appended");

    let path = format!("/products/{}/restock", created.id);
    let response = app.post(&path, &json!({ "quantity": 1 })).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"], "unavailable");
    let history: Vec<Value> = app
        .get(&format!("/products/{}/events", created.id))
        .await
        .json()
        .await
        .expect("a list");
    assert_eq!(history.len(), 2, "nothing was appended: {history:?}");
}
