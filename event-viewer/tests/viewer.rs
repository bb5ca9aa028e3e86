//! The viewer against a real NATS (the shared one, a namespace of the test's own), with no
//! services running: events published on the services' streams the way their relays do
//! reach the window, the saga and the filters; the services show as down.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::HeaderMap;
use clap::Parser;
use event_viewer::{app::Application, config::Config};
use serde_json::{json, Value};

struct Event<'a> {
    id: String,
    subject_prefix: &'a str,
    event_type: &'a str,
    stream_id: String,
    version: i64,
    payload: Value,
}

async fn publish(js: &jetstream::Context, e: Event<'_>) {
    let mut headers = HeaderMap::new();
    headers.insert("Es-Event-Type", e.event_type);
    headers.insert("Es-Stream-Id", e.stream_id.as_str());
    headers.insert("Es-Stream-Version", e.version.to_string());
    headers.insert("Es-Position", "1");
    headers.insert("Es-Correlation-Id", "req-viewer-test");
    let publish = PublishMessage::build()
        .payload(e.payload.to_string().into())
        .headers(headers)
        .message_id(e.id);
    js.send_publish(
        format!("{}.{}.{}", e.subject_prefix, e.stream_id, e.event_type),
        publish,
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
}

async fn get(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("GET")
        .json()
        .await
        .unwrap_or(Value::Null)
}

async fn eventually(url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = get(url).await;
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{url}: last answer {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_web::test]
async fn relayed_events_make_a_saga_and_the_missing_services_show_as_down() {
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let ns = format!(
        "viewertest{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let client = async_nats::connect(nats_url.as_str())
        .await
        .unwrap_or_else(|e| panic!("NATS at {nats_url} ({e}): start nats-server -js"));
    let js = jetstream::new(client);
    for (stream, prefix) in [("order", "order.events"), ("product", "product.events")] {
        js.create_stream(jetstream::stream::Config {
            name: format!("{ns}_{stream}_events"),
            subjects: vec![format!("{ns}.{prefix}.>")],
            ..Default::default()
        })
        .await
        .expect("stream");
    }
    let order_prefix = format!("{ns}.order.events");
    let product_prefix = format!("{ns}.product.events");
    let order = "0190aaaa-0000-7000-8000-000000000001";
    let product = "0190aaaa-0000-7000-8000-000000000002";
    // The saga's events, the products' before the order's: arrival order is not time order
    // between two streams, and the window must cope.
    publish(&js, Event {
        id: format!("{ns}-1"),
        subject_prefix: &order_prefix,
        event_type: "OrderPlaced",
        stream_id: format!("order-{order}"),
        version: 1,
        payload: json!({ "order_id": order, "customer_id": "alice", "lines": [], "total_cents": 0 }),
    })
    .await;

    let config = Config::parse_from([
        "event-viewer",
        "--nats-url",
        &nats_url,
        "--events-namespace",
        &ns,
        "--orders-url",
        "http://127.0.0.1:9",
        "--products-url",
        "http://127.0.0.1:9",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    let app = Application::build(config).await.expect("viewer starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let server = actix_web::rt::spawn(app.run_until_stopped());

    for (i, (prefix, event_type, stream_id, version)) in [
        (
            &product_prefix,
            "StockReserved",
            format!("product-{product}"),
            2,
        ),
        (
            &product_prefix,
            "ReservationConfirmed",
            format!("reservation-{order}"),
            1,
        ),
        (&order_prefix, "OrderConfirmed", format!("order-{order}"), 2),
    ]
    .into_iter()
    .enumerate()
    {
        publish(
            &js,
            Event {
                id: format!("{ns}-{}", i + 2),
                subject_prefix: prefix,
                event_type,
                stream_id,
                version,
                payload: json!({ "order_id": order, "product_id": product }),
            },
        )
        .await;
    }

    let saga = eventually(&format!("{base}/api/saga/req-viewer-test"), |s| {
        s["status"] == "confirmed"
    })
    .await;
    let steps: Vec<&str> = saga["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["event_type"].as_str())
        .collect();
    assert_eq!(
        steps,
        [
            "OrderPlaced",
            "StockReserved",
            "ReservationConfirmed",
            "OrderConfirmed"
        ]
    );
    assert_eq!(saga["waiting_for"], json!([]));

    let events = get(&format!("{base}/api/events?stream=reservation-")).await;
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");

    let status = eventually(&format!("{base}/api/status"), |s| {
        s["status"]["services"]["orders"]["error"].is_string()
    })
    .await;
    assert_eq!(status["status"]["nats_connected"], true, "{status}");
    assert_eq!(
        status["status"]["services"]["orders"]["up"], false,
        "{status}"
    );
    assert_eq!(status["status"]["window_len"], 4, "{status}");

    server.abort();
    for stream in ["order", "product"] {
        let _ = js.delete_stream(format!("{ns}_{stream}_events")).await;
    }
}

#[actix_web::test]
async fn the_page_links_both_services_contracts_and_the_viewer_fetches_them() {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

    // One stand-in for both services, answering any GET with its path.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("an address").port();
    let stand_in = HttpServer::new(|| {
        App::new().default_service(web::get().to(|req: HttpRequest| async move {
            HttpResponse::Ok().json(json!({ "path": req.path() }))
        }))
    })
    .listen(listener)
    .expect("listens")
    .run();
    let stand_in = actix_web::rt::spawn(stand_in);
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let (orders, products) = (
        format!("http://127.0.0.1:{port}/o"),
        format!("http://127.0.0.1:{port}/p"),
    );
    let config = Config::parse_from([
        "event-viewer",
        "--nats-url",
        &nats_url,
        "--events-namespace",
        "viewercontracts",
        "--orders-url",
        &orders,
        "--products-url",
        &products,
        "--http-addr",
        "127.0.0.1:0",
    ]);
    let app = Application::build(config).await.expect("viewer starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let server = actix_web::rt::spawn(app.run_until_stopped());

    let page = reqwest::get(format!("{base}/"))
        .await
        .expect("GET /")
        .text()
        .await
        .expect("the page");
    for (service, path) in [("orders", "/o"), ("products", "/p")] {
        for document in ["asyncapi.json", "openapi.json"] {
            let link = format!("/services/{service}/{document}");
            assert!(
                page.contains(&format!("href=\"{link}\"")),
                "{link} on the page"
            );
            let fetched = get(&format!("{base}{link}")).await;
            assert_eq!(fetched, json!({ "path": format!("{path}/{document}") }));
        }
    }
    for unknown in [
        "/services/billing/asyncapi.json",
        "/services/orders/secrets.json",
    ] {
        let response = reqwest::get(format!("{base}{unknown}")).await.expect("GET");
        assert_eq!(response.status(), 404, "{unknown}");
    }

    server.abort();
    stand_in.abort();
}
