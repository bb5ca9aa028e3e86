//! `product_sales_daily`, the projection kept by a projector from its own checkpoint: it
//! follows reservations and releases a moment behind the store, answers per product and day,
//! and a rebuild from the store gives the rows the projector wrote.
#![allow(clippy::unwrap_used)]

use chrono::Utc;
use event_store::replay::{self, Options};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{eventually, order_placed, TestApp};

/// Polls `GET /products/{id}/sales` until `done` holds for its answer.
async fn sales_until(app: &TestApp, id: Uuid, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/products/{id}/sales");
    eventually("the sales to reach the expected figures", || async {
        let response = app.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        done(&body).then_some(body)
    })
    .await
}

/// Every row of `product_sales_daily`, in key order.
async fn dump(app: &TestApp) -> Vec<Value> {
    sqlx::query_scalar("SELECT to_jsonb(s) FROM product_sales_daily s ORDER BY product_id, day")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sales_per_day_follow_reservations_and_releases_and_a_rebuild_gives_the_same_rows() {
    let app = TestApp::spawn().await;
    let kettle = app.create_product("Kettle", 4000, 10).await;
    let grinder = app.create_product("Grinder", 9000, 1).await;
    let (first, second, refused) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());

    let lines = [(kettle.id, 2)];
    app.publish_order_event(first, 1, "OrderPlaced", &order_placed(first, &lines))
        .await;
    let lines = [(kettle.id, 3), (grinder.id, 1)];
    app.publish_order_event(second, 1, "OrderPlaced", &order_placed(second, &lines))
        .await;
    // More than the stock: rejected, so it reserves nothing.
    let lines = [(kettle.id, 1), (grinder.id, 5)];
    app.publish_order_event(refused, 1, "OrderPlaced", &order_placed(refused, &lines))
        .await;
    app.publish_order_event(first, 2, "OrderCancelled", &json!({ "order_id": first }))
        .await;

    let today = Utc::now().date_naive().to_string();
    let kettle_sales = sales_until(&app, kettle.id, |b| {
        b[0]["reserved"] == 5 && b[0]["released"] == 2
    })
    .await;
    assert_eq!(
        kettle_sales,
        json!([{ "day": today, "reserved": 5, "released": 2 }])
    );
    let grinder_sales = sales_until(&app, grinder.id, |b| b[0]["reserved"] == 1).await;
    assert_eq!(
        grinder_sales,
        json!([{ "day": today, "reserved": 1, "released": 0 }])
    );

    // Live rows against a rebuild from the store, in small pages.
    let live = dump(&app).await;
    let targets = product_service::replay::targets();
    let sales = targets
        .iter()
        .find(|t| t.name() == "product_sales_daily")
        .expect("product_sales_daily can be rebuilt");
    replay::rebuild(
        &app.db.store(),
        sales,
        &Options { page_size: 2 },
        &|_| {},
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(dump(&app).await, live, "the rebuild wrote other rows");

    // The projector carries on from the rebuild's checkpoint: nothing counted twice.
    let third = Uuid::now_v7();
    let lines = [(kettle.id, 4)];
    app.publish_order_event(third, 1, "OrderPlaced", &order_placed(third, &lines))
        .await;
    let kettle_sales = sales_until(&app, kettle.id, |b| b[0]["reserved"] != 5).await;
    assert_eq!(
        kettle_sales,
        json!([{ "day": today, "reserved": 9, "released": 2 }])
    );
}

#[tokio::test]
async fn sales_of_an_unknown_product_are_404_and_a_bad_day_count_is_422() {
    let app = TestApp::spawn().await;
    let unknown = app
        .get(&format!("/products/{}/sales", Uuid::now_v7()))
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let kettle = app.create_product("Kettle", 4000, 10).await;
    let none = app.get(&format!("/products/{}/sales", kettle.id)).await;
    assert_eq!(none.status(), StatusCode::OK);
    assert_eq!(none.json::<Value>().await.unwrap(), json!([]));
    for days in ["0", "367", "-1", "x"] {
        let bad = app
            .get(&format!("/products/{}/sales?days={days}", kettle.id))
            .await;
        assert_eq!(
            bad.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "days={days}"
        );
        let body: Value = bad.json().await.unwrap();
        assert_eq!(body["error"], "validation_failed");
    }
}
