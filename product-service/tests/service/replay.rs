//! Rebuilding `products` from the store: row for row what live processing built, online while
//! reads and writes go on, restoring rows deleted by hand (through the `replay` command), and
//! the admin routes that start and report rebuilds.
// Its helpers unwrap too, and clippy.toml's allow-unwrap-in-tests covers test functions only.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use event_store::replay::{self, Options, RebuildError, Report};
use product_service::api::products::Product;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{order_placed, TestApp, PATIENCE};

const TOKEN: &str = "test-admin-token";

/// Every row of `products`, every column, in id order.
async fn dump(app: &TestApp) -> Vec<Value> {
    sqlx::query_scalar("SELECT to_jsonb(p) FROM products p ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .expect("dumping products")
}

/// A rebuild of `products` through the library, with small pages so there are many.
async fn rebuild(app: &TestApp) -> Report {
    let targets = product_service::replay::targets();
    replay::rebuild(
        &app.db.store(),
        &targets[0],
        &Options { page_size: 7 },
        &|_| {},
        &CancellationToken::new(),
    )
    .await
    .expect("the rebuild succeeds")
}

async fn post_ok(app: &TestApp, path: &str, body: Value) -> Product {
    let response = app.post(path, &body).await;
    assert_eq!(response.status(), 200, "POST {path}");
    response.json().await.expect("a product")
}

/// Products created, repriced and restocked; orders confirmed, rejected and cancelled.
async fn scripted_history(app: &TestApp) -> [Uuid; 3] {
    let cup = app.create_product("Cup", 500, 10).await.id;
    let pot = app.create_product("Teapot", 3000, 2).await.id;
    let tray = app.create_product("Tray", 1200, 0).await.id;
    post_ok(
        app,
        &format!("/products/{cup}/price"),
        json!({ "price_cents": 550 }),
    )
    .await;
    post_ok(
        app,
        &format!("/products/{tray}/restock"),
        json!({ "quantity": 5 }),
    )
    .await;

    let confirmed = Uuid::now_v7();
    let rejected = Uuid::now_v7();
    let cancelled = Uuid::now_v7();
    for (order, lines) in [
        (confirmed, vec![(cup, 3)]),
        (rejected, vec![(pot, 5)]),
        (cancelled, vec![(cup, 2), (tray, 1)]),
    ] {
        app.publish_order_event(order, 1, "OrderPlaced", &order_placed(order, &lines))
            .await;
    }
    app.wait_for_product(cup, |p| p.stock_reserved == 5).await;
    app.wait_for_product(tray, |p| p.stock_reserved == 1).await;
    app.publish_order_event(
        cancelled,
        2,
        "OrderCancelled",
        &json!({ "order_id": cancelled }),
    )
    .await;
    let cup_now = app.wait_for_product(cup, |p| p.version == 5).await;
    assert_eq!((cup_now.stock_available, cup_now.stock_reserved), (7, 3));
    app.wait_for_product(tray, |p| p.version == 4).await;
    [cup, pot, tray]
}

#[tokio::test]
async fn a_rebuild_reproduces_every_product_row_exactly_and_appends_carry_on_writing_it() {
    let app = TestApp::spawn().await;
    let [cup, ..] = scripted_history(&app).await;
    let before = dump(&app).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();

    let report = rebuild(&app).await;

    assert_eq!(dump(&app).await, before);
    assert_eq!(before.len(), 3);
    assert_eq!(report.events_read, u64::try_from(stored).unwrap());
    assert_eq!(report.rows_written, 3);
    // `products` is written inline, by every append: the rebuild read the store to its head,
    // and every append after it writes the new table.
    assert_eq!(
        report.position,
        app.db.store().head_position().await.unwrap()
    );
    let restocked = post_ok(
        &app,
        &format!("/products/{cup}/restock"),
        json!({ "quantity": 1 }),
    )
    .await;
    let read = app.product(cup, restocked.version).await;
    assert_eq!(read.stock_available, 8);
}

#[tokio::test]
async fn products_deleted_by_hand_are_restored_by_the_replay_command() {
    let app = TestApp::spawn().await;
    let [cup, ..] = scripted_history(&app).await;
    let before = dump(&app).await;
    sqlx::query("DELETE FROM products")
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(app.get(&format!("/products/{cup}")).await.status(), 404);

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_product-service"))
        .args(["replay", "--projection", "products", "--page-size", "5"])
        .env("DATABASE_URL", &app.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("the replay command runs");

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "replay failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("products: rebuilt;"), "{stdout}");
    assert!(stdout.contains("rows written"), "{stdout}");
    assert_eq!(dump(&app).await, before);
    assert_eq!(app.get(&format!("/products/{cup}")).await.status(), 200);
}

#[tokio::test]
async fn the_replay_command_lists_the_projections() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_product-service"))
        .args(["replay", "--list"])
        .output()
        .await
        .expect("the replay command runs");

    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.trim(),
        "products\tevents -> products\n\
         product_sales_daily\tevents -> product_sales_daily"
    );
}

#[tokio::test]
async fn reads_and_writes_go_on_during_rebuilds_and_the_result_equals_a_replay_from_scratch() {
    let app = TestApp::spawn_with_admin_token(TOKEN).await;
    let cup = app.create_product("Cup", 500, 100).await.id;
    let pot = app.create_product("Teapot", 3000, 5).await.id;
    app.product(pot, 1).await;
    let done = CancellationToken::new();
    let orders = 8;

    let writer = async {
        for i in 0..40_i64 {
            if i % 2 == 0 {
                post_ok(
                    &app,
                    &format!("/products/{cup}/restock"),
                    json!({ "quantity": 1 }),
                )
                .await;
            } else {
                post_ok(
                    &app,
                    &format!("/products/{pot}/price"),
                    json!({ "price_cents": 3000 + i }),
                )
                .await;
            }
            if i % 5 == 0 {
                let order = Uuid::now_v7();
                app.publish_order_event(order, 1, "OrderPlaced", &order_placed(order, &[(cup, 1)]))
                    .await;
            }
        }
    };
    let rebuilder = async {
        for _ in 0..3 {
            let started = admin_post(&app, "/admin/projections/products/rebuild").await;
            assert_eq!(started.status(), StatusCode::ACCEPTED);
            let finished = rebuild_finished(&app, "products").await;
            assert_eq!(finished["state"], "succeeded", "{finished}");
        }
    };
    let reader = async {
        let (mut reads, mut failures) = (0, Vec::new());
        while !done.is_cancelled() {
            let one = app.get(&format!("/products/{cup}")).await;
            if one.status() != 200 {
                failures.push(format!("GET one: {}", one.status()));
            }
            let all = app.get("/products").await;
            match all.status() {
                StatusCode::OK => {
                    let all: Vec<Product> = all.json().await.expect("a list");
                    if all.len() != 2 {
                        failures.push(format!("GET all: {} products", all.len()));
                    }
                }
                status => failures.push(format!("GET all: {status}")),
            }
            reads += 2;
        }
        (reads, failures)
    };
    let work = async {
        tokio::join!(writer, rebuilder);
        done.cancel();
    };
    let ((), (reads, failures)) = tokio::join!(work, reader);

    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed: {failures:?}",
        failures.len()
    );
    app.wait_for_product(cup, |p| p.stock_reserved == orders)
        .await;
    let live = dump(&app).await;
    rebuild(&app).await;
    assert_eq!(dump(&app).await, live);
    let cup_row = app.product(cup, 1).await;
    let history = app.event_types(&format!("product-{cup}")).await;
    assert_eq!(
        cup_row.stock_available + cup_row.stock_reserved,
        120,
        "{cup_row:?} after {history:?}"
    );
}

#[tokio::test]
async fn admin_routes_do_not_exist_without_a_token() {
    let app = TestApp::spawn().await;

    let list = admin_get(&app, "/admin/projections").await;
    let rebuild = admin_post(&app, "/admin/projections/products/rebuild").await;

    assert_eq!(list.status(), StatusCode::NOT_FOUND);
    assert_eq!(rebuild.status(), StatusCode::NOT_FOUND);
    let body: Value = rebuild.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn admin_routes_need_the_bearer_token_and_report_checkpoint_lag_and_rebuild() {
    let app = TestApp::spawn_with_admin_token(TOKEN).await;
    app.create_product("Cup", 500, 1).await;

    let anonymous = app.get("/admin/projections").await;
    let wrong = app
        .http
        .get(app.url("/admin/projections"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");

    let list: Value = admin_get(&app, "/admin/projections")
        .await
        .json()
        .await
        .unwrap();
    let products = &list["projections"][0];
    assert_eq!(products["name"], "products");
    assert_eq!(products["source"], "events");
    assert_eq!(products["lag"], 0);
    assert_eq!(
        products["checkpoint"],
        app.db.store().head_position().await.unwrap()
    );
    assert_eq!(products["rebuild_running"], false);
    assert!(products["last_rebuild"].is_null());

    let unknown = admin_post(&app, "/admin/projections/nothing/rebuild").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let started = admin_post(&app, "/admin/projections/products/rebuild").await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let started: Value = started.json().await.unwrap();
    assert_eq!(started["state"], "running");
    let finished = rebuild_finished(&app, "products").await;
    assert_eq!(finished["state"], "succeeded", "{finished}");
    assert_eq!(finished["rows_written"], 1);
    assert!(finished["events_read"].as_u64().unwrap() >= 1);

    let openapi: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(openapi["paths"]["/admin/projections/{name}/rebuild"]["post"].is_object());
    assert_eq!(
        openapi["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn a_rebuild_already_running_anywhere_is_refused_with_409() {
    let app = TestApp::spawn_with_admin_token(TOKEN).await;
    // Another process (the `replay` command, say) holds the rebuild lock.
    let mut other = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(event_store::locks::rebuild("products"))
        .execute(&mut other)
        .await
        .unwrap();

    let list: Value = admin_get(&app, "/admin/projections")
        .await
        .json()
        .await
        .unwrap();
    let refused = admin_post(&app, "/admin/projections/products/rebuild").await;
    let library = replay::rebuild(
        &app.db.store(),
        &product_service::replay::targets()[0],
        &Options::default(),
        &|_| {},
        &CancellationToken::new(),
    )
    .await;

    assert_eq!(list["projections"][0]["rebuild_running"], true);
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "rebuild_in_progress");
    assert!(matches!(library, Err(RebuildError::InProgress(_))));
    other.close().await.unwrap();
    let started = admin_post(&app, "/admin/projections/products/rebuild").await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    rebuild_finished(&app, "products").await;
}

async fn admin_get(app: &TestApp, path: &str) -> reqwest::Response {
    app.http
        .get(app.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request sent")
}

async fn admin_post(app: &TestApp, path: &str) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request sent")
}

/// Polls `GET /admin/projections` until the last rebuild of `name` is no longer running.
async fn rebuild_finished(app: &TestApp, name: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let list: Value = admin_get(app, "/admin/projections")
            .await
            .json()
            .await
            .unwrap();
        let projection = list["projections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap();
        let last = &projection["last_rebuild"];
        if last["state"] != "running" {
            return last.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the rebuild did not finish: {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
