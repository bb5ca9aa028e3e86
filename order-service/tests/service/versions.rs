//! product-service's events at every schema version, mixed on the same streams, as during and
//! after a rolling upgrade: version 1 (`price_cents`) upcast to version 2 (`Money`), version 2
//! as written, a version newer than this service knows read for the fields it needs or held
//! until it can be read, and a version no release reads dead-lettered at once.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use service_kit::config::Retention;
use service_kit::prometheus::sample;
use uuid::Uuid;

use crate::support::{eventually, id_of, TestApp};

fn money(amount_minor: i64, currency: &str) -> Value {
    json!({ "amount_minor": amount_minor, "currency": currency })
}

fn created_v1(id: Uuid, name: &str, price_cents: i64, stock: i64) -> Value {
    json!({ "product_id": id, "name": name, "price_cents": price_cents, "initial_stock": stock })
}

fn created_v2(id: Uuid, name: &str, price: Value, stock: i64) -> Value {
    json!({ "product_id": id, "name": name, "price": price, "initial_stock": stock })
}

fn price_changed_v1(id: Uuid, old_cents: i64, new_cents: i64) -> Value {
    json!({ "product_id": id, "old_price_cents": old_cents, "price_cents": new_cents })
}

fn price_changed_v2(id: Uuid, old: Value, new: Value) -> Value {
    json!({ "product_id": id, "old_price": old, "price": new })
}

/// One product-service event as its relay publishes it.
struct Published {
    product: Uuid,
    version: i64,
    event_type: &'static str,
    schema_version: i32,
    payload: Value,
}

fn event(
    product: Uuid,
    version: i64,
    event_type: &'static str,
    schema_version: i32,
    payload: Value,
) -> Published {
    Published {
        product,
        version,
        event_type,
        schema_version,
        payload,
    }
}

async fn publish(app: &TestApp, event: &Published) {
    app.publish_product_event_at(
        &format!("product-{}", event.product),
        event.version,
        event.event_type,
        event.schema_version,
        event.payload.clone(),
    )
    .await;
}

/// `(price_cents, currency, version)` of a catalogue entry.
fn price_of(entry: &Value) -> (i64, String, i64) {
    (
        entry["price_cents"].as_i64().expect("a price"),
        entry["currency"].as_str().expect("a currency").to_owned(),
        entry["version"].as_i64().expect("a version"),
    )
}

/// `(kind, error, payload)` of every dead letter of the app, oldest first.
async fn dead_letters(app: &TestApp) -> Vec<(String, String, Value)> {
    let rows: Vec<(String, String, Vec<u8>)> =
        sqlx::query_as("SELECT kind, error, payload FROM dead_letters ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .expect("reading dead_letters");
    rows.into_iter()
        .map(|(kind, error, payload)| {
            let payload = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            (kind, error, payload)
        })
        .collect()
}

/// `(stream version, schema version)` of a stream's events in the inbox, as received.
async fn inbox_versions(app: &TestApp, product: Uuid) -> Vec<(i64, i32)> {
    sqlx::query_as(
        "SELECT stream_version, schema_version FROM inbox WHERE stream_id = $1 \
         ORDER BY stream_version",
    )
    .bind(format!("product-{product}"))
    .fetch_all(&app.db.pool)
    .await
    .expect("reading the inbox")
}

/// `es_consumer_messages_total` of order-service's consumer for `outcome`. The registry is the
/// process's, shared by the tests running beside this one: compare before and after.
async fn consumed(app: &TestApp, outcome: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.expect("metrics");
    let labels = [("consumer", "order-service"), ("outcome", outcome)];
    sample(&text, "es_consumer_messages_total", &labels).unwrap_or(0.0)
}

#[tokio::test]
async fn product_events_of_versions_1_and_2_interleaved_on_the_same_streams_are_all_applied() {
    let app = TestApp::spawn().await;
    let (kettle, mug, cup) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let usd = |cents| money(cents, "USD");
    let events = [
        event(
            kettle,
            1,
            "ProductCreated",
            1,
            created_v1(kettle, "Kettle", 1000, 5),
        ),
        event(
            mug,
            1,
            "ProductCreated",
            2,
            created_v2(mug, "Mug", usd(500), 3),
        ),
        event(
            kettle,
            2,
            "PriceChanged",
            2,
            price_changed_v2(kettle, usd(1000), usd(1100)),
        ),
        event(mug, 2, "PriceChanged", 1, price_changed_v1(mug, 500, 450)),
        event(
            cup,
            1,
            "ProductCreated",
            2,
            created_v2(cup, "Cup", money(700, "EUR"), 4),
        ),
        event(
            kettle,
            3,
            "PriceChanged",
            1,
            price_changed_v1(kettle, 1100, 1200),
        ),
        event(mug, 3, "PriceChanged", 1, price_changed_v1(mug, 450, 400)),
        event(
            kettle,
            4,
            "PriceChanged",
            2,
            price_changed_v2(kettle, usd(1200), usd(1250)),
        ),
        event(
            cup,
            2,
            "PriceChanged",
            2,
            price_changed_v2(cup, money(700, "EUR"), money(650, "EUR")),
        ),
        event(
            kettle,
            5,
            "ProductRestocked",
            1,
            json!({ "product_id": kettle, "quantity": 2 }),
        ),
    ];

    for e in &events {
        publish(&app, e).await;
    }

    let kettle_entry = app.catalogue_entry(kettle, 5).await;
    let mug_entry = app.catalogue_entry(mug, 3).await;
    let cup_entry = app.catalogue_entry(cup, 2).await;
    assert_eq!(price_of(&kettle_entry), (1250, "USD".to_owned(), 5));
    assert_eq!(kettle_entry["stock_available"], 7);
    assert_eq!(price_of(&mug_entry), (400, "USD".to_owned(), 3));
    assert_eq!(price_of(&cup_entry), (650, "EUR".to_owned(), 2));
    // Every event recorded, each at the version it was written in: stored events never change.
    assert_eq!(
        inbox_versions(&app, kettle).await,
        [(1, 1), (2, 2), (3, 1), (4, 2), (5, 1)]
    );
    assert_eq!(inbox_versions(&app, mug).await, [(1, 2), (2, 1), (3, 1)]);
    assert_eq!(dead_letters(&app).await, []);
    // An order takes the last price, whichever version carried it.
    let order = app.placed("alice", &[(kettle, 2)]).await;
    assert_eq!(order["lines"][0]["unit_price_cents"], 1250);
    assert_eq!(order["total_cents"], 2500);
    assert_eq!(order["currency"], "USD");
    app.order_with_status(&id_of(&order), "pending").await;
}

#[tokio::test]
async fn events_of_both_versions_delivered_out_of_stream_order_are_applied_in_stream_order() {
    let app = TestApp::spawn().await;
    let id = Uuid::new_v4();
    let usd = |cents| money(cents, "USD");
    let created = event(
        id,
        1,
        "ProductCreated",
        2,
        created_v2(id, "Teapot", usd(900), 2),
    );
    let to_950 = event(id, 2, "PriceChanged", 1, price_changed_v1(id, 900, 950));
    let to_990 = event(
        id,
        3,
        "PriceChanged",
        2,
        price_changed_v2(id, usd(950), usd(990)),
    );
    let to_999 = event(id, 4, "PriceChanged", 1, price_changed_v1(id, 990, 999));

    // Each early event is parked until its predecessor arrives.
    for e in [&to_999, &to_950, &created, &to_990] {
        publish(&app, e).await;
    }

    let entry = app.catalogue_entry(id, 4).await;
    assert_eq!(price_of(&entry), (999, "USD".to_owned(), 4));
    assert_eq!(
        inbox_versions(&app, id).await,
        [(1, 2), (2, 1), (3, 2), (4, 1)]
    );
    assert_eq!(dead_letters(&app).await, []);
}

#[tokio::test]
async fn a_version_newer_than_this_service_knows_is_applied_when_it_has_every_field_needed() {
    let app = TestApp::spawn().await;
    let id = Uuid::new_v4();
    // Version 3 as a later product-service might write it: more fields, some nested.
    let price = json!({ "amount_minor": 1500, "currency": "GBP", "tax_included": true });
    let mut created = created_v2(id, "Grinder", price.clone(), 6);
    created["sku"] = json!("GR-1");
    created["tags"] = json!(["coffee"]);
    let new_price = json!({ "amount_minor": 1400, "currency": "GBP", "tax_included": true });
    let mut changed = price_changed_v2(id, price, new_price);
    changed["reason"] = json!("promotion");

    publish(&app, &event(id, 1, "ProductCreated", 3, created)).await;
    publish(&app, &event(id, 2, "PriceChanged", 3, changed)).await;

    let entry = app.catalogue_entry(id, 2).await;
    assert_eq!(price_of(&entry), (1400, "GBP".to_owned(), 2));
    assert_eq!(
        (entry["name"].clone(), entry["stock_available"].clone()),
        (json!("Grinder"), json!(6))
    );
    assert_eq!(inbox_versions(&app, id).await, [(1, 3), (2, 3)]);
    assert_eq!(dead_letters(&app).await, []);
}

#[tokio::test]
async fn a_newer_version_lacking_a_needed_field_is_redelivered_then_dead_lettered_naming_version_2()
{
    let retry = Duration::from_millis(200);
    let app = TestApp::spawn_with(&event_store::testing::nats_url(), |config| {
        config.common.newer_schema_retry = Retention(retry);
    })
    .await;
    let held_before = consumed(&app, "newer_schema").await;
    let (unreadable, readable) = (Uuid::new_v4(), Uuid::new_v4());
    let mut without_price =
        json!({ "product_id": unreadable, "name": "Scale", "initial_stock": 1 });
    without_price["weight_grams"] = json!(300);
    let sent = Instant::now();

    publish(
        &app,
        &event(unreadable, 1, "ProductCreated", 3, without_price.clone()),
    )
    .await;
    let later = created_v2(readable, "Filter", money(300, "USD"), 9);
    publish(&app, &event(readable, 1, "ProductCreated", 2, later)).await;

    // The consumer goes on with other streams while the event waits.
    app.catalogue_entry(readable, 1).await;
    let (kind, error) = eventually("the newer event to be dead-lettered", || async {
        let dead = dead_letters(&app).await;
        dead.into_iter()
            .find(|(_, _, payload)| *payload == without_price)
            .map(|(kind, error, _)| (kind, error))
    })
    .await;
    let waited = sent.elapsed();

    assert_eq!(kind, "newer_schema", "{error}");
    assert!(error.contains("after 10 deliveries"), "{error}");
    assert!(
        error.contains("ProductCreated schema version 3 is newer than version 2"),
        "the error names the newest version this service reads: {error}"
    );
    assert!(
        error.contains("price"),
        "the error names the missing field: {error}"
    );
    assert!(
        waited >= retry * 9,
        "dead-lettered after {waited:?}: nine redeliveries take at least {:?}",
        retry * 9
    );
    let held = consumed(&app, "newer_schema").await - held_before;
    assert!(held >= 9.0, "held {held} times before dead-lettering");
    let missing = app.get(&format!("/catalog/products/{unreadable}")).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(inbox_versions(&app, unreadable).await, []);
    assert_eq!(dead_letters(&app).await.len(), 1);
}

#[tokio::test]
async fn a_version_no_release_reads_is_dead_lettered_at_once_as_poison() {
    // The default hold for newer versions (30 s a delivery) is far beyond the test's patience:
    // only an event dead-lettered at its first failure is seen in time.
    let app = TestApp::spawn().await;
    let cases = [
        ("version 0", 0, "schema version 0 cannot be read"),
        ("a negative version", -1, "schema version -1 cannot be read"),
        (
            "version 2 without its fields",
            2,
            "schema version 2 cannot be read",
        ),
    ];
    let mut payloads = Vec::new();
    for (case, schema_version, _) in &cases {
        let id = Uuid::new_v4();
        let payload = created_v1(id, case, 100, 1);
        publish(
            &app,
            &event(id, 1, "ProductCreated", *schema_version, payload.clone()),
        )
        .await;
        payloads.push(payload);
    }
    let control = Uuid::new_v4();
    publish(
        &app,
        &event(
            control,
            1,
            "ProductCreated",
            1,
            created_v1(control, "Control", 100, 1),
        ),
    )
    .await;

    app.catalogue_entry(control, 1).await;
    let dead = eventually("every case to be dead-lettered", || async {
        let dead = dead_letters(&app).await;
        (dead.len() >= cases.len()).then_some(dead)
    })
    .await;

    for ((case, _, expected), payload) in cases.iter().zip(&payloads) {
        let found = dead.iter().find(|(_, _, p)| p == payload);
        let (kind, error, _) = found.unwrap_or_else(|| panic!("{case}: not dead-lettered"));
        assert_eq!(kind, "poison", "{case}: {error}");
        assert!(error.contains(expected), "{case}: {error}");
        assert!(
            !error.contains("deliveries"),
            "{case}: retried first: {error}"
        );
    }
    assert_eq!(dead.len(), cases.len());
}
