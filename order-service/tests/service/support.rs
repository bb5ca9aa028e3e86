//! `TestApp`: order-service on a free port with a database of its own and a unique NATS
//! namespace, plus typed helpers to play product-service's part by publishing its events.

use std::sync::atomic::{AtomicI64, Ordering};

use async_nats::jetstream;
use event_store::testing::{self, TestDb};
pub use event_store::testing::{eventually, PATIENCE};
use event_store::{EventStore, Metadata, RecordedEvent};
use order_service::config::{AdminToken, Common, EventNames};
use order_service::Config;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub js: jetstream::Context,
    pub names: EventNames,
    pub nats_url: String,
    config: Config,
    shutdown: CancellationToken,
    running: Option<JoinHandle<anyhow::Result<()>>>,
    next_position: AtomicI64,
    // Dropped last: the app's connections go with it.
    pub db: TestDb,
}

impl TestApp {
    /// The app on the shared NATS server.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with_nats(&testing::nats_url()).await
    }

    pub async fn spawn_with_nats(nats_url: &str) -> TestApp {
        TestApp::spawn_with(nats_url, |_| {}).await
    }

    /// The app with `ADMIN_TOKEN` set to `token`.
    pub async fn spawn_with_admin_token(token: &str) -> TestApp {
        TestApp::spawn_with(&testing::nats_url(), |config| {
            config.common.admin_token = Some(AdminToken::new(token));
        })
        .await
    }

    pub async fn spawn_with(nats_url: &str, adjust: impl FnOnce(&mut Config)) -> TestApp {
        testing::init_tracing();
        let db = TestDb::new().await;
        let mut config = Config {
            database_url: db.url.clone(),
            http_addr: "127.0.0.1:0".parse().expect("an address"),
            common: Common {
                nats_url: nats_url.to_owned(),
                events_namespace: testing::unique("ns"),
                ..Common::default()
            },
            ..Config::defaults()
        };
        adjust(&mut config);
        let names = config.nats_names();
        let app = order_service::build(config.clone())
            .await
            .expect("building the app");
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_token();
        let running = tokio::spawn(app.run_until_stopped());
        let client = async_nats::connect(nats_url)
            .await
            .expect("connecting to NATS");
        let js = jetstream::new(client);
        event_store::nats::ensure_stream(&js, &names.other_stream, &names.other_subjects)
            .await
            .expect("declaring product-service's stream");
        TestApp {
            address,
            http: reqwest::Client::new(),
            js,
            names,
            nats_url: nats_url.to_owned(),
            config,
            shutdown,
            running: Some(running),
            next_position: AtomicI64::new(1 << 20),
            db,
        }
    }

    pub fn store(&self) -> EventStore {
        self.db.store()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("sending a request")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("sending a request")
    }

    pub async fn place_order(&self, customer_id: &str, lines: &[(Uuid, i64)]) -> Response {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(product_id, quantity)| json!({ "product_id": product_id, "quantity": quantity }))
            .collect();
        self.post(
            "/orders",
            &json!({ "customer_id": customer_id, "lines": lines }),
        )
        .await
    }

    /// Places an order that must succeed; returns its body.
    pub async fn placed(&self, customer_id: &str, lines: &[(Uuid, i64)]) -> Value {
        let response = self.place_order(customer_id, lines).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("an order body")
    }

    pub async fn cancel(&self, order_id: &str) -> Response {
        self.post(&format!("/orders/{order_id}/cancel"), &json!({}))
            .await
    }

    /// Publishes an event as product-service's relay would, at schema version 1.
    pub async fn publish_product_event(
        &self,
        stream_id: &str,
        version: i64,
        event_type: &str,
        payload: Value,
    ) -> Uuid {
        self.publish_product_event_at(stream_id, version, event_type, 1, payload)
            .await
    }

    /// Publishes an event as product-service's relay would, written at `schema_version`.
    pub async fn publish_product_event_at(
        &self,
        stream_id: &str,
        version: i64,
        event_type: &str,
        schema_version: i32,
        payload: Value,
    ) -> Uuid {
        let event_id = Uuid::now_v7();
        let correlation = format!("test-{event_id}");
        let position = self.next_position.fetch_add(1 << 20, Ordering::SeqCst);
        let event = RecordedEvent {
            position,
            stream_id: stream_id.to_owned(),
            stream_version: version,
            event_id,
            event_type: event_type.to_owned(),
            schema_version,
            payload,
            metadata: Metadata {
                correlation_id: Some(correlation),
                ..Metadata::default()
            },
            recorded_at: chrono::Utc::now(),
        };
        let (headers, body) = testing::as_relayed("product-service", &event);
        let subject = format!("{}.{stream_id}.{event_type}", self.names.other_subjects);
        testing::publish_stored(&self.js, subject, headers, body).await;
        event_id
    }

    /// Publishes product-service's `ReservationConfirmed` for every line of `order` (a body
    /// of `POST /orders`); returns the event's id.
    pub async fn confirm_reservation(&self, order: &Value) -> Uuid {
        let id = id_of(order);
        let lines: Vec<Value> = order["lines"]
            .as_array()
            .expect("an order's lines")
            .iter()
            .map(|l| json!({ "product_id": l["product_id"], "quantity": l["quantity"] }))
            .collect();
        self.publish_product_event(
            &format!("reservation-{id}"),
            1,
            "ReservationConfirmed",
            json!({ "order_id": id, "lines": lines }),
        )
        .await
    }

    /// Publishes `ProductCreated` and waits until the catalogue shows the product.
    pub async fn create_product(&self, name: &str, price_cents: i64, stock: i64) -> Uuid {
        let product_id = Uuid::new_v4();
        self.publish_product_event(
            &format!("product-{product_id}"),
            1,
            "ProductCreated",
            json!({ "product_id": product_id, "name": name, "price_cents": price_cents,
                    "initial_stock": stock }),
        )
        .await;
        self.catalogue_entry(product_id, 1).await;
        product_id
    }

    /// The catalogue entry once it has reached `version`.
    pub async fn catalogue_entry(&self, product_id: Uuid, version: i64) -> Value {
        let path = format!("/catalog/products/{product_id}?min_version={version}");
        eventually("the catalogue entry", || async {
            let response = self.get(&path).await;
            let fresh = response.status() == StatusCode::OK && !is_stale(&response);
            fresh.then_some(response)
        })
        .await
        .json()
        .await
        .expect("a product body")
    }

    /// The order from the read model once `ready` holds for it.
    pub async fn order_when(&self, order_id: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/orders/{order_id}");
        eventually("the order", || async {
            let response = self.get(&path).await;
            if response.status() != StatusCode::OK {
                return None;
            }
            let body: Value = response.json().await.ok()?;
            ready(&body).then_some(body)
        })
        .await
    }

    pub async fn order_with_status(&self, order_id: &str, status: &str) -> Value {
        self.order_when(order_id, |o| o["status"] == status).await
    }

    /// Stops the app and starts it again on the same database and namespace, as a redeploy
    /// would.
    pub async fn restart(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            let stopped = tokio::time::timeout(PATIENCE, running).await;
            assert!(stopped.is_ok(), "the app stops in time");
        }
        let app = order_service::build(self.config.clone())
            .await
            .expect("restarting the app");
        self.address = format!("http://127.0.0.1:{}", app.port());
        self.shutdown = app.shutdown_token();
        self.running = Some(tokio::spawn(app.run_until_stopped()));
    }

    /// Stops the app as SIGTERM would and returns how `run_until_stopped` ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let running = self.running.take().expect("the app runs");
        tokio::time::timeout(PATIENCE, running)
            .await
            .expect("the app stops in time")
            .expect("the app task did not panic")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let streams = vec![
            self.names.own_stream.clone(),
            self.names.other_stream.clone(),
        ];
        testing::delete_streams(&self.nats_url, streams);
    }
}

pub fn is_stale(response: &Response) -> bool {
    response
        .headers()
        .get("x-stale")
        .is_some_and(|v| v == "true")
}

/// An id taken from an order body.
pub fn id_of(order: &Value) -> String {
    order["id"].as_str().expect("an order id").to_owned()
}
