//! product-service's database moved to another Postgres cluster (pg_dump, pg_restore into a
//! fresh initdb, as a backup restore or a major-version upgrade does) while order-service
//! keeps running: the new cluster's transaction ids start far below the ones the stored
//! events were written with, yet every command after the move, on old products and new ones,
//! reaches order-service's catalogue and the saga confirms, within the settle bound.
//! (docs/adr/0001-no-skip-positions.md, "Moving the database")

use std::time::Instant;

use event_store::testing::{self, unique, PgServer, TestDb};
use serde_json::{json, Value};
use sqlx::Connection;
use tests::faults::{check_consistent, create_products, Fault, INITIAL_STOCK};
use tests::{ServiceProcess, TestSystem, SETTLE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_product_service_database_moves_to_a_fresh_cluster_new_commands_reach_order_service()
{
    drop(testing::connect_nats().await);
    // The source: a cluster whose transaction ids are those of a long-lived server.
    let source = tokio::task::block_in_place(|| PgServer::start_with_xid_epoch(1));
    let products_db = TestDb::empty_on(&source.url()).await;
    let orders_db = TestDb::empty().await;
    let mut system = TestSystem::start_on_databases(
        products_db,
        orders_db,
        testing::nats_url(),
        Vec::new(),
        Vec::new(),
    )
    .await;
    let customer = unique("moved");

    // Before the move: products known to order-service, an order through the saga.
    let mut products = create_products(&system, 2).await;
    let mut acknowledged = vec![place_confirmed_order(&system, &customer, &products[0]).await];

    // Stop product-service and move its database.
    system.products.kill();
    let head: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(&system.products_db.pool)
        .await
        .unwrap();
    let target = tokio::task::block_in_place(PgServer::start);
    let fresh_xid = current_xid(&target.url()).await;
    // The premise: without the fix, every new event would land below the stored ones.
    assert!(
        fresh_xid < head >> 20,
        "the fresh cluster's transaction id {fresh_xid} must be below the stored events' ({})",
        head >> 20
    );
    let moved_url = tokio::task::block_in_place(|| {
        target.restore_from(&source.url(), &system.products_db.name)
    });
    let env = vec![
        ("DATABASE_URL".to_owned(), moved_url.clone()),
        ("NATS_URL".to_owned(), testing::nats_url()),
        ("EVENTS_NAMESPACE".to_owned(), system.namespace.clone()),
        (
            "RUST_LOG".to_owned(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        ),
    ];
    system.products = ServiceProcess::start("product-service", env);
    system.products.wait_ready().await;
    let moved = Instant::now();

    // After the move: a new product, price changes of an old and the new one, an order on
    // each, all the way to order-service and back.
    let new = system
        .create_product("Moved item", 2_000, INITIAL_STOCK)
        .await;
    system.catalogue_has(&new, 1).await;
    change_price(&system, &products[1], 1_234).await;
    change_price(&system, &new, 2_345).await;
    for (id, price) in [(&products[1], 1_234), (&new, 2_345)] {
        let entry = system
            .eventually(
                format!("{}/catalog/products/{id}", system.orders.base_url),
                |b| b["price_cents"] == price,
            )
            .await;
        assert_eq!(entry["version"], 2, "{entry}");
    }
    products.push(new.clone());
    for id in [&new, &products[0]] {
        acknowledged.push(place_confirmed_order(&system, &customer, id).await);
    }
    let recovered = moved.elapsed();

    let mut conn = sqlx::PgConnection::connect(&moved_url).await.unwrap();
    let offset: i64 = sqlx::query_scalar("SELECT xid_offset FROM position_epoch")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let mut verdict = check_consistent(&system, &products, &customer, &acknowledged).await;
    // The history against the moved database, where product-service's events now are.
    let moved_pool = sqlx::PgPool::connect(&moved_url).await.unwrap();
    let none = std::collections::HashSet::new();
    let orders_pool = &system.orders_db.pool;
    let settle = tests::HISTORY_SETTLE;
    verdict.history = vec![
        tests::history::check_settled(&moved_pool, orders_pool, &none, settle)
            .await
            .unwrap(),
        tests::history::check_settled(orders_pool, &moved_pool, &none, settle)
            .await
            .unwrap(),
    ];
    moved_pool.close().await;
    verdict.audit = Some(system.audit().await);
    eprintln!(
        "database moved: stored positions up to transaction {}, the fresh cluster at {fresh_xid}, \
         offset {offset}; every command after the move settled in {} ms (bound {} ms)",
        head >> 20,
        recovered.as_millis(),
        SETTLE.as_millis()
    );
    assert!(recovered < SETTLE, "recovery took {recovered:?}");
    verdict.report(&Fault {
        name: "database_moved",
        injected: 1,
        ended: moved,
    });
}

/// Places an order for one of `product` and waits until the saga confirms it.
async fn place_confirmed_order(system: &TestSystem, customer: &str, product: &str) -> String {
    let (status, order) = system
        .post(
            format!("{}/orders", system.orders.base_url),
            json!({
                "customer_id": customer,
                "lines": [{ "product_id": product, "quantity": 1 }],
            }),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_str().expect("an order id").to_owned();
    let settled: Value = system.settled_order(&id).await;
    assert_eq!(settled["status"], "confirmed", "{settled}");
    id
}

async fn change_price(system: &TestSystem, product: &str, price_cents: i64) {
    let (status, body) = system
        .post(
            format!("{}/products/{product}/price", system.products.base_url),
            json!({ "price_cents": price_cents }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The server's next transaction id (64-bit), as a fresh transaction draws it.
async fn current_xid(url: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connecting to Postgres");
    let xid = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut conn)
        .await
        .expect("a transaction id");
    let _ = conn.close().await;
    xid
}
