//! A database holding only version-1 events, written by hand-written fixture scripts and not by
//! today's code (`tests/fixtures/history/`): both services start on it, build its missing read
//! models before serving, serve the history's reads, take new commands on its old streams, and
//! rebuild every projection to the same rows as a database holding the same history in
//! today's shapes.
// Its helpers unwrap too, and clippy.toml's allow-unwrap-in-tests covers test functions only.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use event_store::testing::{self, TestDb};
use event_store::wire::WireEvent;
use order_service::domain::events::OrderEvent;
use product_service::domain::events::{ProductEvent, ReservationEvent};
use serde_json::{json, Value};
use sqlx::PgPool;
use tests::{service_binary, TestSystem};

const TEAPOT: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const KETTLE: &str = "aaaaaaaa-0000-4000-8000-000000000002";
const MUG: &str = "aaaaaaaa-0000-4000-8000-000000000003";
const ORDER_1: &str = "bbbbbbbb-0000-4000-8000-000000000001";
const ORDER_2: &str = "bbbbbbbb-0000-4000-8000-000000000002";
const ORDER_3: &str = "bbbbbbbb-0000-4000-8000-000000000003";
/// The last transaction id the fixtures use: new appends must draw larger ones.
const LAST_FIXTURE_TRANSACTION: i64 = 25;

/// A database of each service, migrated as the service migrates it and loaded from one
/// `<service>.<history>.sql` pair of fixture scripts.
struct Pair {
    products: TestDb,
    orders: TestDb,
}

impl Pair {
    async fn load(history: &str) -> Pair {
        let products = TestDb::empty().await;
        product_service::app::migrate(&products.pool).await.unwrap();
        load_script(&products.pool, &format!("product-service.{history}.sql")).await;
        let orders = TestDb::empty().await;
        order_service::app::migrate(&orders.pool).await.unwrap();
        load_script(&orders.pool, &format!("order-service.{history}.sql")).await;
        Pair { products, orders }
    }
}

async fn load_script(pool: &PgPool, name: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/history")
        .join(name);
    let script = std::fs::read_to_string(&path).unwrap();
    sqlx::raw_sql(&script)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
    let next: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(
        next > LAST_FIXTURE_TRANSACTION,
        "the server hands out transaction id {next}, inside the fixtures' history"
    );
}

/// Rows as JSON, in a stable order.
async fn rows(pool: &PgPool, sql: &str) -> Vec<Value> {
    sqlx::query_scalar(&format!(
        "SELECT to_jsonb(r) FROM ({sql}) r ORDER BY to_jsonb(r)::text"
    ))
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Every row of every table a projection of the service writes, by table.
async fn projection_rows(pool: &PgPool, tables: &[String]) -> BTreeMap<String, Vec<Value>> {
    let mut all = BTreeMap::new();
    for table in tables {
        all.insert(
            table.clone(),
            rows(pool, &format!("SELECT * FROM {table}")).await,
        );
    }
    all
}

/// What differs between two sets of rows: those only one side has; `None` when they agree.
fn difference(left: &[Value], right: &[Value]) -> Option<String> {
    if left == right {
        return None;
    }
    let only = |a: &[Value], b: &[Value]| -> String {
        a.iter()
            .filter(|row| !b.contains(row))
            .map(|row| format!("\n    {row}"))
            .collect()
    };
    Some(format!(
        "\n  only on the left:{}\n  only on the right:{}",
        only(left, right),
        only(right, left)
    ))
}

fn assert_same(what: &str, left: &[Value], right: &[Value]) {
    if let Some(difference) = difference(left, right) {
        panic!("{what}:{difference}");
    }
}

/// Panics naming each projection table whose rows differ, with the rows only one side has.
fn assert_same_rows(
    what: &str,
    left: &[BTreeMap<String, Vec<Value>>],
    right: &[BTreeMap<String, Vec<Value>>],
) {
    let problems: Vec<String> = left
        .iter()
        .zip(right)
        .flat_map(|(left, right)| {
            left.iter().filter_map(|(table, rows)| {
                difference(rows, &right[table]).map(|d| format!("{table}:{d}"))
            })
        })
        .collect();
    assert!(problems.is_empty(), "{what}: {}", problems.join("\n"));
}

fn product_tables() -> Vec<String> {
    product_service::replay::targets()
        .iter()
        .flat_map(|t| t.tables().to_vec())
        .collect()
}

fn order_tables() -> Vec<String> {
    order_service::replay::targets()
        .iter()
        .flat_map(|t| t.tables().to_vec())
        .collect()
}

/// Rebuilds every projection of `service` with its `replay` command.
async fn replay(service: &str, db: &TestDb) {
    let output = tokio::process::Command::new(service_binary(service))
        .arg("replay")
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{service} replay failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn replay_pair(products: &TestDb, orders: &TestDb) {
    replay("product-service", products).await;
    replay("order-service", orders).await;
}

/// The version product-service writes `event_type` at.
fn product_service_version(event_type: &str) -> Option<i32> {
    ProductEvent::current_version(event_type)
        .or_else(|| ReservationEvent::current_version(event_type))
}

/// The scripts tell one history: each inbox holds exactly the other service's events, the
/// version-1 scripts hold only version 1, and the current ones only the current versions.
async fn check_fixtures(v1: &Pair, current: &Pair) {
    let events = "SELECT event_id, stream_id, stream_version, event_type, schema_version, \
                  payload, metadata, position FROM events";
    let inbox = "SELECT event_id, stream_id, stream_version, event_type, schema_version, \
                 payload, metadata, source_position AS position FROM inbox";
    for pair in [v1, current] {
        assert_same(
            "product-service's events (left), order-service's inbox (right)",
            &rows(&pair.products.pool, events).await,
            &rows(&pair.orders.pool, inbox).await,
        );
        assert_same(
            "order-service's events (left), product-service's inbox (right)",
            &rows(&pair.orders.pool, events).await,
            &rows(&pair.products.pool, inbox).await,
        );
    }
    let envelope = "SELECT event_id, stream_id, stream_version, event_type, metadata, position, \
                    transaction_id::text, recorded_at FROM events";
    for (v1_db, current_db) in [
        (&v1.products, &current.products),
        (&v1.orders, &current.orders),
    ] {
        assert_same(
            "the version-1 script (left) and the current one (right) differ beyond payloads",
            &rows(&v1_db.pool, envelope).await,
            &rows(&current_db.pool, envelope).await,
        );
    }
    let versions = "SELECT DISTINCT event_type, schema_version FROM events";
    check_versions(&current.products, product_service_version).await;
    check_versions(&current.orders, OrderEvent::current_version).await;
    for db in [&v1.products, &v1.orders] {
        for row in rows(&db.pool, versions).await {
            assert_eq!(row["schema_version"], 1, "{row}");
        }
    }
}

/// Every event of `db` is at the version today's code writes its type at.
async fn check_versions(db: &TestDb, current_version: fn(&str) -> Option<i32>) {
    let versions = "SELECT DISTINCT event_type, schema_version FROM events";
    for row in rows(&db.pool, versions).await {
        let event_type = row["event_type"].as_str().unwrap();
        assert_eq!(
            row["schema_version"].as_i64(),
            current_version(event_type).map(i64::from),
            "today's code writes {event_type} at another version: move its events in the \
             current scripts to it"
        );
    }
}

/// The fields of `body` that `expected` has: what an assertion compares, so fields added
/// later do not break it, and a missing one reads as `null`.
fn pick(body: &Value, expected: &Value) -> Value {
    let fields = expected.as_object().expect("an object");
    fields
        .keys()
        .map(|f| (f.clone(), body[f].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The rows of every projection of both services.
async fn all_projection_rows(
    products: &TestDb,
    orders: &TestDb,
) -> Vec<BTreeMap<String, Vec<Value>>> {
    vec![
        projection_rows(&products.pool, &product_tables()).await,
        projection_rows(&orders.pool, &order_tables()).await,
    ]
}

/// An order line as the API shows it.
fn line(product_id: &str, quantity: i64, unit_price_cents: i64) -> Value {
    json!({ "product_id": product_id, "quantity": quantity, "unit_price_cents": unit_price_cents })
}

/// What the story left: products, the catalogue, orders.
async fn check_reads(system: &TestSystem) {
    let (products, orders) = (&system.products.base_url, &system.orders.base_url);
    for (id, name, price, available, reserved, version) in [
        (TEAPOT, "Teapot", 2_200, 8, 2, 3),
        (KETTLE, "Kettle", 4_000, 4, 1, 4),
        (MUG, "Mug", 800, 3, 0, 4),
    ] {
        let (status, product) = system.get(format!("{products}/products/{id}")).await;
        assert_eq!(status, 200, "{product}");
        let expected = json!({ "name": name, "price_cents": price, "currency": "USD",
            "stock_available": available, "stock_reserved": reserved, "version": version });
        assert_eq!(pick(&product, &expected), expected);
        let entry = system.catalogue_has(id, version).await;
        let expected = json!({ "name": name, "price_cents": price, "currency": "USD",
            "stock_available": available, "available": true, "version": version });
        assert_eq!(pick(&entry, &expected), expected);
    }
    let (_, catalogue) = system.get(format!("{orders}/catalog/products")).await;
    let names: Vec<&Value> = catalogue["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    assert_eq!(names, ["Kettle", "Mug", "Teapot"], "{catalogue}");

    for (id, customer, status, lines, total, version) in [
        (
            ORDER_1,
            "alice",
            "confirmed",
            vec![line(TEAPOT, 2, 2_200), line(KETTLE, 1, 4_000)],
            8_400,
            2,
        ),
        (
            ORDER_2,
            "bob",
            "rejected",
            vec![line(MUG, 5, 800)],
            4_000,
            2,
        ),
        (
            ORDER_3,
            "carol",
            "cancelled",
            vec![line(KETTLE, 1, 4_000), line(MUG, 2, 800)],
            5_600,
            3,
        ),
    ] {
        let (code, order) = system.get(format!("{orders}/orders/{id}")).await;
        assert_eq!(code, 200, "{order}");
        let expected = json!({ "customer_id": customer, "status": status, "total_cents": total,
            "currency": "USD", "version": version });
        assert_eq!(pick(&order, &expected), expected);
        let read = order["lines"].as_array().unwrap();
        assert_eq!(read.len(), lines.len(), "{order}");
        for (read, expected) in read.iter().zip(&lines) {
            assert_eq!(&pick(read, expected), expected);
        }
        if status == "rejected" {
            let reason = order["rejection_reason"].as_str().unwrap_or_default();
            assert!(reason.contains(MUG), "the reason names the Mug: {order}");
        }
    }
}

/// Commands on streams the version-1 history began: a price change, an order of its
/// products, and the cancellation of one of its confirmed orders.
async fn take_new_commands(system: &TestSystem) {
    let (products, orders) = (&system.products.base_url, &system.orders.base_url);
    let (status, changed) = system
        .post(
            format!("{products}/products/{KETTLE}/price"),
            json!({ "price_cents": 4_500 }),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["version"], 5, "{changed}");
    let entry = system.catalogue_has(KETTLE, 5).await;
    let expected = json!({ "price_cents": 4_500, "currency": "USD" });
    assert_eq!(pick(&entry, &expected), expected);
    // Written at the version today's code writes, after the version-1 events of its stream.
    let written: i32 = sqlx::query_scalar(
        "SELECT schema_version FROM events WHERE stream_id = $1 AND stream_version = 5",
    )
    .bind(format!("product-{KETTLE}"))
    .fetch_one(&system.products_db.pool)
    .await
    .unwrap();
    assert_eq!(Some(written), product_service_version("PriceChanged"));

    let (status, placed) = system
        .post(
            format!("{orders}/orders"),
            json!({ "customer_id": "dave", "lines": [
                { "product_id": TEAPOT, "quantity": 1 }, { "product_id": KETTLE, "quantity": 1 }
            ] }),
        )
        .await;
    assert_eq!(status, 201, "{placed}");
    let expected = json!({ "total_cents": 6_700, "currency": "USD" });
    assert_eq!(pick(&placed, &expected), expected);
    let settled = system.settled_order(placed["id"].as_str().unwrap()).await;
    assert_eq!(settled["status"], "confirmed", "{settled}");

    let (status, cancelled) = system
        .post(format!("{orders}/orders/{ORDER_1}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let expected = json!({ "status": "cancelled", "version": 3 });
    assert_eq!(pick(&cancelled, &expected), expected);
    // Teapot: 8 - 1 (dave's) + 2 (alice's back); Kettle: 4 - 1 (dave's) + 1 (alice's back).
    for (id, available, reserved, version) in [(TEAPOT, 9, 1, 5), (KETTLE, 4, 1, 7)] {
        let product = system
            .eventually(format!("{products}/products/{id}"), |p| {
                p["version"] == version
            })
            .await;
        let expected = json!({ "stock_available": available, "stock_reserved": reserved });
        assert_eq!(pick(&product, &expected), expected);
        let entry = system.catalogue_has(id, version).await;
        assert_eq!(entry["stock_available"], available, "{entry}");
    }
}

/// Waits until product-service's projector (`product_sales_daily`, kept from a checkpoint of
/// its own) has applied every stored event. Unlike the inline read models the commands were
/// awaited through, it follows the store asynchronously, up to its pace (50 ms) behind.
async fn projector_caught_up(products: &PgPool) {
    let checkpoint =
        event_store::projection::checkpoint_name(product_service::projections::sales::NAME);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let behind: bool = sqlx::query_scalar(
            "SELECT coalesce((SELECT position FROM checkpoints WHERE name = $1), 0) \
                    < coalesce((SELECT max(position) FROM events), 0)",
        )
        .bind(&checkpoint)
        .fetch_one(products)
        .await
        .unwrap();
        if !behind {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the projector of product_sales_daily caught up with the store"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_version_1_database_serves_takes_commands_and_replays_as_a_current_one() {
    let v1 = Pair::load("v1").await;
    let current = Pair::load("current").await;
    check_fixtures(&v1, &current).await;

    // Both services start on the version-1 databases. The fixtures hold events only: each
    // service builds its missing read models before it serves, so the history's reads are
    // right at once, without the `replay` command.
    let system = TestSystem::start_on_databases(
        v1.products,
        v1.orders,
        testing::nats_url(),
        Vec::new(),
        Vec::new(),
    )
    .await;
    check_reads(&system).await;
    let built_at_start = all_projection_rows(&system.products_db, &system.orders_db).await;

    // Every projection rebuilt by the `replay` command gives the rows the same history in
    // today's shapes gives, and the rows built at start.
    replay_pair(&system.products_db, &system.orders_db).await;
    replay_pair(&current.products, &current.orders).await;
    let from_v1 = all_projection_rows(&system.products_db, &system.orders_db).await;
    for tables in &from_v1 {
        assert!(
            tables.values().all(|rows| rows.len() == 3),
            "three products, three orders: {tables:#?}"
        );
    }
    let from_current = all_projection_rows(&current.products, &current.orders).await;
    assert_same_rows(
        "rebuilt from version 1 (left), from current events (right)",
        &from_v1,
        &from_current,
    );
    assert_same_rows(
        "built at start (left), rebuilt by replay (right)",
        &built_at_start,
        &from_v1,
    );

    take_new_commands(&system).await;

    // What live processing kept over both versions is what a rebuild gives.
    projector_caught_up(&system.products_db.pool).await;
    let live = all_projection_rows(&system.products_db, &system.orders_db).await;
    replay_pair(&system.products_db, &system.orders_db).await;
    let rebuilt = all_projection_rows(&system.products_db, &system.orders_db).await;
    assert_same_rows("live (left), rebuilt (right)", &live, &rebuilt);
}
