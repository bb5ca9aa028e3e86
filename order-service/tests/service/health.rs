use event_store::testing::NatsServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{eventually, id_of, TestApp};

#[tokio::test]
async fn the_service_is_live_and_ready_with_its_dependencies_up() {
    let app = TestApp::spawn().await;

    let live = app.get("/health/live").await;
    assert_eq!(live.status(), StatusCode::OK);
    let ready = eventually("readiness", || async {
        let response = app.get("/health/ready").await;
        (response.status() == StatusCode::OK).then_some(response)
    })
    .await;
    let body: Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "status": "ready", "database": "up", "nats": "up" })
    );
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_the_error_body() {
    let app = TestApp::spawn().await;

    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();

    let expected = [
        ("/orders", "post"),
        ("/orders", "get"),
        ("/orders/{id}", "get"),
        ("/orders/{id}/cancel", "post"),
        ("/catalog/products", "get"),
        ("/catalog/products/{id}", "get"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is missing"
        );
    }
    let schemas = &doc["components"]["schemas"];
    for schema in ["ErrorBody", "PlaceOrderRequest", "OrderView", "ProductView"] {
        assert!(schemas[schema].is_object(), "schema {schema} is missing");
    }
}

#[tokio::test]
async fn orders_are_taken_while_nats_is_down_and_published_when_it_returns() {
    let mut nats = NatsServer::start();
    let app = TestApp::spawn_with_nats(&nats.url()).await;
    let widget = app.create_product("Widget", 100, 10).await;

    nats.stop();
    let unready = eventually("readiness to fail", || async {
        let response = app.get("/health/ready").await;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    let body: Value = unready.json().await.unwrap();
    assert_eq!(
        (body["nats"].clone(), body["database"].clone()),
        (json!("down"), json!("up"))
    );
    assert_eq!(body["error"], "unavailable");
    let order = app.placed("alice", &[(widget, 1)]).await;
    nats.restart();

    let id = id_of(&order);
    let subject = format!("{}.order-{id}.OrderPlaced", app.names.own_subjects);
    eventually("the order to be published", || async {
        let mut stream = app.js.get_stream(&app.names.own_stream).await.ok()?;
        stream.info().await.ok()?;
        stream.get_last_raw_message_by_subject(&subject).await.ok()
    })
    .await;
}

#[tokio::test]
async fn the_app_stops_cleanly_when_asked() {
    let app = TestApp::spawn().await;
    app.create_product("Widget", 100, 10).await;

    let stopped = app.stop().await;

    assert!(stopped.is_ok(), "{stopped:?}");
}
