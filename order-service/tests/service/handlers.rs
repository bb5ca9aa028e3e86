//! The consumer's handlers and the orders projection, driven directly on a database.

use event_store::aggregate::{Commands, On};
use event_store::consumer::{ForeignEvent, HandleError, Reaction};
use event_store::idempotency::Kept;
use event_store::projection::Projection;
use event_store::testing::TestDb;
use event_store::{EventStore, Metadata};
use order_service::domain::commands::OrderCommand;
use order_service::domain::events::{Money, OrderLine};
use order_service::domain::order::Order;
use order_service::projections::catalog::{self, CatalogProjection};
use order_service::projections::orders::{self, OrdersProjection};
use order_service::reactions::reservation::ReservationOutcome;
use serde_json::{json, Value};
use uuid::Uuid;

async fn migrated() -> TestDb {
    let db = TestDb::new().await;
    order_service::app::migrate(&db.pool).await.unwrap();
    db
}

fn foreign(stream_id: String, version: i64, event_type: &str, payload: Value) -> ForeignEvent {
    ForeignEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        stream_id,
        stream_version: version,
        source_position: version << 20,
        schema_version: 1,
        payload,
        metadata: Metadata {
            correlation_id: Some("corr-1".into()),
            ..Metadata::default()
        },
    }
}

/// Runs `handler` on `event` in a transaction, committing only when it succeeds.
async fn handle(
    db: &TestDb,
    handler: &dyn Reaction,
    event: &ForeignEvent,
) -> Result<(), HandleError> {
    let mut tx = db.pool.begin().await.unwrap();
    handler.handle(&mut tx, event).await?;
    tx.commit().await.unwrap();
    Ok(())
}

async fn place(store: &EventStore) -> Uuid {
    let order_id = Uuid::now_v7();
    let command = OrderCommand::PlaceOrder {
        order_id,
        customer_id: "alice".into(),
        lines: vec![OrderLine {
            product_id: Uuid::new_v4(),
            quantity: 1,
            unit_price: Money {
                amount_minor: 100,
                currency: "USD".into(),
            },
        }],
    };
    Commands::<Order>::new(store.clone())
        .execute(
            On::New(order_id),
            command,
            &Metadata::default(),
            None,
            &|_| Kept::json(201, None, &()),
        )
        .await
        .unwrap();
    order_id
}

/// Event `version` of product `id`'s stream, a Widget at 100 cents: created with `quantity` in
/// stock, or `quantity` reserved or restocked.
fn widget(id: Uuid, version: i64, event_type: &str, quantity: i64) -> ForeignEvent {
    let payload = match event_type {
        "ProductCreated" => {
            json!({ "product_id": id, "name": "Widget", "price_cents": 100, "initial_stock": quantity })
        }
        _ => json!({ "product_id": id, "quantity": quantity }),
    };
    foreign(format!("product-{id}"), version, event_type, payload)
}

#[tokio::test]
async fn the_catalogue_applies_each_product_version_once() {
    let db = migrated().await;
    let id = Uuid::new_v4();
    let [created, reserved] = [
        widget(id, 1, "ProductCreated", 3),
        widget(id, 2, "StockReserved", 2),
    ];

    for event in [&created, &reserved, &reserved, &created] {
        handle(&db, &CatalogProjection, event).await.unwrap();
    }

    let row = catalog::find(&db.pool, id).await.unwrap().unwrap();
    assert_eq!(
        (row.stock_available, row.available, row.version),
        (1, true, 2)
    );
}

/// A batch that starts inside what a row already holds (a rebuild's catch-up over rows it
/// wrote, an event older than the stored row): the fold skips the events the row includes and
/// applies the rest once. The write's version guard alone would let the old event count again,
/// as the batch's last version is past the row's.
#[tokio::test]
async fn a_catalogue_batch_applies_only_the_events_past_its_rows_version() {
    let db = migrated().await;
    let id = Uuid::new_v4();
    let [created, reserved, restocked] = [
        widget(id, 1, "ProductCreated", 3),
        widget(id, 2, "StockReserved", 2),
        widget(id, 3, "ProductRestocked", 5),
    ];
    let mut conn = db.pool.acquire().await.unwrap();
    catalog::apply_batch(&mut conn, &[&created, &reserved], None)
        .await
        .unwrap();

    catalog::apply_batch(&mut conn, &[&reserved, &restocked], None)
        .await
        .unwrap();

    let row = catalog::find(&db.pool, id).await.unwrap().unwrap();
    assert_eq!((row.stock_available, row.version), (6, 3));
    // From the stream's start, the row is folded afresh and not read: the same row.
    catalog::apply_batch(&mut conn, &[&created, &reserved, &restocked], None)
        .await
        .unwrap();
    let row = catalog::find(&db.pool, id).await.unwrap().unwrap();
    assert_eq!((row.stock_available, row.version), (6, 3));
}

#[tokio::test]
async fn events_the_handlers_do_not_know_change_nothing() {
    let db = migrated().await;
    let store = db.store();
    let order_id = place(&store).await;
    let events = [
        foreign(
            format!("product-{}", Uuid::new_v4()),
            1,
            "ProductDiscontinued",
            json!({}),
        ),
        foreign(
            format!("reservation-{order_id}"),
            1,
            "ReservationReleased",
            json!({ "order_id": order_id, "lines": [] }),
        ),
    ];

    for event in &events {
        handle(&db, &CatalogProjection, event).await.unwrap();
        handle(&db, &ReservationOutcome::new(store.clone()), event)
            .await
            .unwrap();
    }

    assert_eq!(
        store
            .stream_version(&format!("order-{order_id}"))
            .await
            .unwrap(),
        1
    );
    assert!(catalog::list(&db.pool, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_payload_that_does_not_decode_is_poison() {
    let db = migrated().await;
    let store = db.store();
    let broken = [
        foreign(
            format!("product-{}", Uuid::new_v4()),
            1,
            "ProductCreated",
            json!({ "name": 1 }),
        ),
        foreign(
            format!("reservation-{}", Uuid::new_v4()),
            1,
            "ReservationConfirmed",
            json!({ "order": 1 }),
        ),
    ];
    let handlers: [&dyn Reaction; 2] = [&CatalogProjection, &ReservationOutcome::new(store)];

    for event in &broken {
        let known_to = handlers.iter().filter(|h| {
            let name = h.name();
            (name == catalog::NAME) == (event.event_type == "ProductCreated")
        });
        for handler in known_to {
            let result = handle(&db, *handler, event).await;
            assert!(
                matches!(result, Err(HandleError::Poison(_))),
                "{}: {result:?}",
                event.event_type
            );
        }
    }
}

#[tokio::test]
async fn a_value_postgres_cannot_store_is_poison_not_retried() {
    let db = migrated().await;
    let id = Uuid::new_v4();
    let event = foreign(
        format!("product-{id}"),
        1,
        "ProductCreated",
        json!({ "product_id": id, "name": "Wid\u{0}get", "price_cents": 100, "initial_stock": 3 }),
    );

    let result = handle(&db, &CatalogProjection, &event).await;

    assert!(matches!(result, Err(HandleError::Poison(_))), "{result:?}");
}

#[tokio::test]
async fn a_reservation_outcome_decides_the_order_with_causation_and_correlation() {
    let db = migrated().await;
    let store = db.store();
    let order_id = place(&store).await;
    let reaction = ReservationOutcome::new(store.clone());
    let rejected = foreign(
        format!("reservation-{order_id}"),
        1,
        "ReservationRejected",
        json!({ "order_id": order_id, "product_id": null, "reason": "no stock", "requested": 1, "available": 0 }),
    );
    let late_confirmation = foreign(
        format!("reservation-{order_id}"),
        2,
        "ReservationConfirmed",
        json!({ "order_id": order_id, "lines": [] }),
    );

    handle(&db, &reaction, &rejected).await.unwrap();
    handle(&db, &reaction, &late_confirmation).await.unwrap();

    let events = store
        .read_stream(&format!("order-{order_id}"), 1)
        .await
        .unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["OrderPlaced", "OrderRejected"]);
    assert_eq!(
        events[1].metadata.causation_id,
        Some(rejected.event_id.to_string())
    );
    assert_eq!(events[1].metadata.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(events[1].payload["reason"], "no stock");
}

#[tokio::test]
async fn a_reservation_for_an_unknown_order_is_poison() {
    let db = migrated().await;
    let order_id = Uuid::new_v4();
    let event = foreign(
        format!("reservation-{order_id}"),
        1,
        "ReservationConfirmed",
        json!({ "order_id": order_id, "lines": [] }),
    );

    let result = handle(&db, &ReservationOutcome::new(db.store()), &event).await;

    assert!(matches!(result, Err(HandleError::Poison(_))), "{result:?}");
}

#[tokio::test]
async fn a_concurrent_write_to_the_order_is_a_conflict_to_decide_again() {
    let db = migrated().await;
    let store = db.store();
    let order_id = place(&store).await;
    let event = foreign(
        format!("reservation-{order_id}"),
        1,
        "ReservationConfirmed",
        json!({ "order_id": order_id, "lines": [] }),
    );
    let reaction = ReservationOutcome::new(store.clone());

    // The consumer's transaction sees the order as pending (its snapshot predates the
    // cancellation), so it decides to confirm; the append then meets the cancellation.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM events")
        .execute(&mut *tx)
        .await
        .unwrap();
    Commands::<Order>::new(store.clone())
        .execute(
            On::Existing(order_id),
            OrderCommand::Cancel,
            &Metadata::default(),
            None,
            &|_| Kept::json(200, None, &()),
        )
        .await
        .unwrap();
    let result = reaction.handle(&mut tx, &event).await;
    drop(tx);

    assert!(
        matches!(result, Err(HandleError::Conflict(_))),
        "{result:?}"
    );
    let version = store
        .stream_version(&format!("order-{order_id}"))
        .await
        .unwrap();
    assert_eq!(version, 2, "only the cancellation was stored");
}

#[tokio::test]
async fn the_orders_projection_folds_each_version_once() {
    let db = migrated().await;
    let store = db.store();
    let order_id = place(&store).await;
    Commands::<Order>::new(store.clone())
        .execute(
            On::Existing(order_id),
            OrderCommand::Confirm,
            &Metadata::default(),
            None,
            &|_| Kept::json(200, None, &()),
        )
        .await
        .unwrap();
    let events = store
        .read_stream(&format!("order-{order_id}"), 1)
        .await
        .unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    for event in events.iter().chain(events.iter()) {
        OrdersProjection.apply(&mut tx, event).await.unwrap();
    }
    tx.commit().await.unwrap();

    let row = orders::find(&db.pool, order_id).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.version, row.total_cents),
        ("confirmed", 2, 100)
    );
    assert_eq!(row.placed_at, events[0].recorded_at);
}
