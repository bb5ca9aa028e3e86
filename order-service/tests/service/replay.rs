//! Rebuilding `orders` (from the store) and `catalog` (from the inbox): row for row what live
//! processing built, online while reads and writes go on, restoring rows deleted by hand
//! (through the `replay` command), and the admin routes that start and report rebuilds.

use std::time::Duration;

use event_store::replay::{self, Options, Report};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{id_of, TestApp, PATIENCE};

const TOKEN: &str = "test-admin-token";

/// Every row of both read models, every column, in key order.
async fn dump(app: &TestApp) -> (Vec<Value>, Vec<Value>) {
    let orders = sqlx::query_scalar("SELECT to_jsonb(o) FROM orders o ORDER BY order_id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let catalog =
        sqlx::query_scalar("SELECT to_jsonb(c) FROM catalog_products c ORDER BY product_id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    (orders, catalog)
}

/// Rebuilds every projection through the library, with small pages so there are many.
async fn rebuild_all(app: &TestApp) -> Vec<Report> {
    let mut reports = Vec::new();
    for target in order_service::replay::targets() {
        let report = replay::rebuild(
            &app.store(),
            &target,
            &Options { page_size: 3 },
            &|_| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("rebuilding {}: {e}", target.name()));
        reports.push(report);
    }
    reports
}

async fn product_event(app: &TestApp, product: Uuid, version: i64, kind: &str, fields: Value) {
    let mut payload = json!({ "product_id": product });
    if let (Some(payload), Some(fields)) = (payload.as_object_mut(), fields.as_object()) {
        payload.extend(fields.clone());
    }
    app.publish_product_event(&format!("product-{product}"), version, kind, payload)
        .await;
}

/// Products created, repriced and restocked; orders confirmed, rejected and cancelled (one
/// while pending, one once confirmed), with the stock events product-service would send.
async fn scripted_history(app: &TestApp) -> Vec<String> {
    let cup = app.create_product("Cup", 500, 10).await;
    let pot = app.create_product("Teapot", 3000, 2).await;
    let tray = app.create_product("Tray", 1200, 0).await;
    let price = json!({ "old_price_cents": 500, "price_cents": 550 });
    product_event(app, cup, 2, "PriceChanged", price).await;
    product_event(app, tray, 2, "ProductRestocked", json!({ "quantity": 5 })).await;
    app.catalogue_entry(cup, 2).await;
    app.catalogue_entry(tray, 2).await;

    let confirmed = app.placed("alice", &[(cup, 3)]).await;
    let rejected = app.placed("bob", &[(pot, 5)]).await;
    let cancelled = app.placed("carol", &[(cup, 2), (tray, 1)]).await;
    let withdrawn = app.placed("dave", &[(tray, 1)]).await;
    product_event(app, cup, 3, "StockReserved", json!({ "quantity": 3 })).await;
    app.confirm_reservation(&confirmed).await;
    let rejected_id = id_of(&rejected);
    app.publish_product_event(
        &format!("reservation-{rejected_id}"),
        1,
        "ReservationRejected",
        json!({ "order_id": rejected_id, "product_id": pot, "reason": "insufficient stock",
                "requested": 5, "available": 2 }),
    )
    .await;
    product_event(app, cup, 4, "StockReserved", json!({ "quantity": 2 })).await;
    product_event(app, tray, 3, "StockReserved", json!({ "quantity": 1 })).await;
    app.confirm_reservation(&cancelled).await;
    app.order_with_status(&id_of(&confirmed), "confirmed").await;
    app.order_with_status(&rejected_id, "rejected").await;
    app.order_with_status(&id_of(&cancelled), "confirmed").await;
    for order in [&cancelled, &withdrawn] {
        assert_eq!(app.cancel(&id_of(order)).await.status(), StatusCode::OK);
    }
    product_event(app, cup, 5, "StockReleased", json!({ "quantity": 2 })).await;
    product_event(app, tray, 4, "StockReleased", json!({ "quantity": 1 })).await;
    let cup_entry = app.catalogue_entry(cup, 5).await;
    assert_eq!(cup_entry["stock_available"], 7);
    app.catalogue_entry(tray, 4).await;
    for order in [&cancelled, &withdrawn] {
        app.order_with_status(&id_of(order), "cancelled").await;
    }
    [&confirmed, &rejected, &cancelled, &withdrawn]
        .iter()
        .map(|o| id_of(o))
        .collect()
}

#[tokio::test]
async fn a_rebuild_reproduces_every_order_and_catalogue_row_exactly_and_processing_carries_on() {
    let app = TestApp::spawn().await;
    let orders = scripted_history(&app).await;
    let before = dump(&app).await;
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();

    let reports = rebuild_all(&app).await;

    assert_eq!(dump(&app).await, before);
    assert_eq!((before.0.len(), before.1.len()), (4, 3));
    assert_eq!(reports[0].rows_written, 4);
    assert_eq!(reports[1].events_read, u64::try_from(inbox).unwrap());
    assert_eq!(reports[1].rows_written, 3);
    // `orders` is written inline, by every append: the rebuild read the store to its head.
    assert_eq!(
        reports[0].position,
        app.store().head_position().await.unwrap()
    );
    // Both live writers apply what comes next to the new tables.
    let cup = before.1.iter().find(|p| p["name"] == "Cup").unwrap()["product_id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    let later = app.placed("erin", &[(cup, 1)]).await;
    app.order_with_status(&id_of(&later), "pending").await;
    app.order_with_status(&orders[0], "confirmed").await;
    let price = json!({ "old_price_cents": 550, "price_cents": 600 });
    product_event(&app, cup, 6, "PriceChanged", price).await;
    assert_eq!(app.catalogue_entry(cup, 6).await["price_cents"], 600);
}

#[tokio::test]
async fn rows_deleted_by_hand_are_restored_by_the_replay_command() {
    let app = TestApp::spawn().await;
    let orders = scripted_history(&app).await;
    let before = dump(&app).await;
    sqlx::query("DELETE FROM orders")
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM catalog_products")
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        app.get(&format!("/orders/{}", orders[0])).await.status(),
        StatusCode::NOT_FOUND
    );

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-service"))
        .args(["replay", "--page-size", "2"])
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
    for line in [
        "orders: rebuilt;",
        "catalog: rebuilt;",
        "total: 2 projections",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from {stdout}");
    }
    assert_eq!(dump(&app).await, before);
    assert_eq!(
        app.get(&format!("/orders/{}", orders[0])).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_replay_command_lists_the_projections_and_refuses_unknown_ones() {
    let bin = env!("CARGO_BIN_EXE_order-service");
    let list = tokio::process::Command::new(bin)
        .args(["replay", "--list"])
        .output()
        .await
        .unwrap();
    let db = event_store::testing::TestDb::new().await;
    let unknown = tokio::process::Command::new(bin)
        .args(["replay", "--projection", "nothing"])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();

    assert!(list.status.success());
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "orders\tevents -> orders\ncatalog\tinbox -> catalog_products\n"
    );
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("no projection is named \"nothing\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn reads_and_writes_go_on_during_rebuilds_and_the_result_equals_a_replay_from_scratch() {
    let app = TestApp::spawn_with_admin_token(TOKEN).await;
    let cup = app.create_product("Cup", 100, 1000).await;
    let pot = app.create_product("Teapot", 3000, 5).await;
    let first = id_of(&app.placed("alice", &[(pot, 1)]).await);
    app.order_with_status(&first, "pending").await;
    let done = CancellationToken::new();
    let rounds = 24;

    let writer = async {
        let mut confirmed = Vec::new();
        for i in 0..rounds {
            let order = app
                .placed(&format!("customer-{}", i % 4), &[(cup, 1)])
                .await;
            match i % 3 {
                0 => assert_eq!(app.cancel(&id_of(&order)).await.status(), StatusCode::OK),
                1 => {
                    app.confirm_reservation(&order).await;
                    confirmed.push(id_of(&order));
                }
                _ => {}
            }
            product_event(
                &app,
                cup,
                i + 2,
                "PriceChanged",
                json!({ "old_price_cents": 99 + i, "price_cents": 100 + i }),
            )
            .await;
        }
        confirmed
    };
    let rebuilder = async {
        for _ in 0..2 {
            for name in ["orders", "catalog"] {
                let started = admin_post(&app, &format!("/admin/projections/{name}/rebuild")).await;
                assert_eq!(started.status(), StatusCode::ACCEPTED);
                let finished = rebuild_finished(&app, name).await;
                assert_eq!(finished["state"], "succeeded", "{finished}");
            }
        }
    };
    let reader = async {
        let (mut reads, mut failures) = (0, Vec::new());
        while !done.is_cancelled() {
            for path in [
                format!("/orders/{first}"),
                "/orders?limit=200".to_owned(),
                format!("/catalog/products/{cup}"),
            ] {
                let status = app.get(&path).await.status();
                if status != StatusCode::OK {
                    failures.push(format!("GET {path}: {status}"));
                }
            }
            let list: Value = app.get("/catalog/products").await.json().await.unwrap();
            if list["products"].as_array().map(Vec::len) != Some(2) {
                failures.push(format!("GET /catalog/products: {list}"));
            }
            reads += 4;
        }
        (reads, failures)
    };
    let work = async {
        let (confirmed, ()) = tokio::join!(writer, rebuilder);
        done.cancel();
        confirmed
    };
    let (confirmed, (reads, failures)) = tokio::join!(work, reader);

    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed: {failures:?}",
        failures.len()
    );
    for id in &confirmed {
        app.order_with_status(id, "confirmed").await;
    }
    app.catalogue_entry(cup, rounds + 1).await;
    let live = dump(&app).await;
    assert_eq!(live.0.len(), usize::try_from(rounds).unwrap() + 1);
    rebuild_all(&app).await;
    assert_eq!(dump(&app).await, live);
}

#[tokio::test]
async fn admin_routes_do_not_exist_without_a_token() {
    let app = TestApp::spawn().await;

    let list = admin_get(&app, "/admin/projections").await;
    let rebuild = admin_post(&app, "/admin/projections/orders/rebuild").await;

    assert_eq!(list.status(), StatusCode::NOT_FOUND);
    assert_eq!(rebuild.status(), StatusCode::NOT_FOUND);
    let body: Value = rebuild.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn admin_routes_need_the_bearer_token_and_report_checkpoint_lag_and_rebuild() {
    let app = TestApp::spawn_with_admin_token(TOKEN).await;
    let cup = app.create_product("Cup", 500, 1).await;
    app.placed("alice", &[(cup, 1)]).await;

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
    let (orders, catalog) = (&list["projections"][0], &list["projections"][1]);
    assert_eq!(
        (&orders["name"], &orders["source"]),
        (&json!("orders"), &json!("events"))
    );
    assert_eq!(orders["lag"], 0);
    assert_eq!(
        orders["checkpoint"],
        app.store().head_position().await.unwrap()
    );
    assert_eq!(orders["tables"], json!(["orders"]));
    assert_eq!(
        (&catalog["name"], &catalog["source"]),
        (&json!("catalog"), &json!("inbox"))
    );
    assert_eq!(catalog["checkpoint"], 1);
    assert_eq!(catalog["rebuild_running"], false);
    assert!(catalog["last_rebuild"].is_null());

    let unknown = admin_post(&app, "/admin/projections/nothing/rebuild").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    for name in ["orders", "catalog"] {
        let started = admin_post(&app, &format!("/admin/projections/{name}/rebuild")).await;
        assert_eq!(started.status(), StatusCode::ACCEPTED);
        assert_eq!(started.headers()["location"], "/admin/projections");
        let finished = rebuild_finished(&app, name).await;
        assert_eq!(finished["state"], "succeeded", "{finished}");
        assert_eq!(finished["rows_written"], 1);
        assert!(finished["seconds"].as_f64().is_some());
    }

    let openapi: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(openapi["paths"]["/admin/projections"]["get"].is_object());
    assert_eq!(
        openapi["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn a_rebuild_already_running_anywhere_is_refused_with_409() {
    let app = TestApp::spawn_with_admin_token(TOKEN).await;
    // Another process (the `replay` command, say) holds the catalogue's rebuild lock.
    let mut other = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(event_store::locks::rebuild("catalog"))
        .execute(&mut other)
        .await
        .unwrap();

    let list: Value = admin_get(&app, "/admin/projections")
        .await
        .json()
        .await
        .unwrap();
    let refused = admin_post(&app, "/admin/projections/catalog/rebuild").await;
    let other_projection = admin_post(&app, "/admin/projections/orders/rebuild").await;

    assert_eq!(list["projections"][1]["rebuild_running"], true);
    assert_eq!(list["projections"][0]["rebuild_running"], false);
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "rebuild_in_progress");
    assert_eq!(other_projection.status(), StatusCode::ACCEPTED);
    rebuild_finished(&app, "orders").await;
    other.close().await.unwrap();
    let started = admin_post(&app, "/admin/projections/catalog/rebuild").await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    rebuild_finished(&app, "catalog").await;
}

async fn admin_get(app: &TestApp, path: &str) -> Response {
    app.http
        .get(app.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

async fn admin_post(app: &TestApp, path: &str) -> Response {
    app.http
        .post(app.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
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
