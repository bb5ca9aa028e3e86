//! The AsyncAPI document, served beside the OpenAPI one and printed by the `asyncapi`
//! command: the channels, messages and operations of the events order-service publishes and
//! of product-service's that it consumes.

use serde_json::Value;

use crate::support::TestApp;

#[tokio::test]
async fn the_asyncapi_document_describes_every_event_published_and_consumed() {
    let app = TestApp::spawn().await;

    let response = app.get("/asyncapi.json").await;

    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "order-service");
    let namespace = app
        .names
        .own_subjects
        .strip_suffix(".order.events")
        .unwrap();
    assert_eq!(
        doc["components"]["parameters"]["namespace"]["default"],
        namespace
    );
    let channels = doc["channels"].as_object().unwrap();
    let mut names: Vec<&str> = channels.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "DeadLetter",
            "OrderCancelled",
            "OrderConfirmed",
            "OrderPlaced",
            "OrderRejected",
            "PriceChanged",
            "ProductCreated",
            "ProductRestocked",
            "ReservationConfirmed",
            "ReservationRejected",
            "ReservationReleased",
            "StockReleased",
            "StockReserved",
        ]
    );
    assert_eq!(
        doc["channels"]["OrderPlaced"]["address"],
        "{namespace}.order.events.{streamId}.OrderPlaced"
    );
    assert_eq!(
        doc["channels"]["PriceChanged"]["address"],
        "{namespace}.product.events.{streamId}.PriceChanged"
    );
    assert_eq!(
        doc["channels"]["DeadLetter"]["address"],
        "{namespace}.deadletter.order-service"
    );
    let messages = &doc["components"]["messages"];
    for (key, dataschema) in [
        (
            "OrderPlaced_v1",
            "urn:eventsourced:order-service:OrderPlaced:1",
        ),
        (
            "OrderPlaced_v2",
            "urn:eventsourced:order-service:OrderPlaced:2",
        ),
        (
            "ProductCreated_v1",
            "urn:eventsourced:product-service:ProductCreated:1",
        ),
        (
            "ProductCreated_v2",
            "urn:eventsourced:product-service:ProductCreated:2",
        ),
    ] {
        let headers = &messages[key]["headers"]["properties"];
        assert_eq!(headers["ce-dataschema"]["const"], dataschema, "{key}");
    }
    assert_eq!(
        messages["OrderPlaced_v1"]["payload"]["$ref"],
        "#/components/schemas/OrderPlacedV1"
    );
    let operations = &doc["operations"];
    assert_eq!(operations["sendOrderPlaced"]["action"], "send");
    assert_eq!(operations["receivePriceChanged"]["action"], "receive");
    assert_eq!(
        operations["receiveReservationConfirmed"]["action"],
        "receive"
    );
    assert_eq!(operations["sendDeadLetter"]["action"], "send");
    assert_eq!(operations.as_object().map(|o| o.len()), Some(13));

    let openapi: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(openapi["paths"]["/asyncapi.json"]["get"]["tags"][0], "meta");
}

#[tokio::test]
async fn the_asyncapi_command_prints_the_document_without_a_database_or_nats() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-service"))
        .args(["asyncapi", "--events-namespace", "cli"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:9/none")
        .env("NATS_URL", "nats://127.0.0.1:9")
        .output()
        .await
        .unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(
        doc["components"]["parameters"]["namespace"]["default"],
        "cli"
    );
    assert_eq!(doc["servers"]["nats"]["host"], "127.0.0.1:9");
    assert!(doc["channels"]["OrderPlaced"].is_object());
}
