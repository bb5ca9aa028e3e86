//! A running product-service per test: its own database, its own NATS namespace on the shared
//! server, typed helpers for the calls the tests make.

use std::time::Duration;

use async_nats::jetstream;
use event_store::testing::{self, TestDb};
pub use event_store::testing::{eventually, PATIENCE};
use event_store::{Metadata, RecordedEvent};
use product_service::api::products::Product;
use product_service::config::{AdminToken, Common, EventNames};
use product_service::Config;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub js: jetstream::Context,
    pub nats: async_nats::Client,
    pub names: EventNames,
    pub namespace: String,
    shutdown: CancellationToken,
    // Dropped last: the app's connections go with it.
    pub db: TestDb,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    /// The app with `ADMIN_TOKEN` set to `token`.
    pub async fn spawn_with_admin_token(token: &str) -> TestApp {
        TestApp::spawn_with(|config| config.common.admin_token = Some(AdminToken::new(token))).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        testing::init_tracing();
        let db = TestDb::new().await;
        let namespace = testing::unique("ns");
        let mut config = Config {
            database_url: db.url.clone(),
            http_addr: "127.0.0.1:0".parse().expect("an address"),
            common: Common {
                nats_url: testing::nats_url(),
                events_namespace: namespace.clone(),
                ..Common::default()
            },
            ..Config::defaults()
        };
        adjust(&mut config);
        let names = config.nats_names();
        let app = product_service::build(config)
            .await
            .expect("the app starts");
        let address = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown_token();
        tokio::spawn(app.run_until_stopped());
        let nats = testing::connect_nats().await;
        let js = jetstream::new(nats.clone());
        TestApp {
            address,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a client"),
            js,
            nats,
            names,
            namespace,
            shutdown,
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a product through the API and returns the 201 body.
    pub async fn create_product(&self, name: &str, price_cents: i64, stock: i64) -> Product {
        let response = self
            .post(
                "/products",
                &json!({ "name": name, "price_cents": price_cents, "stock": stock }),
            )
            .await;
        assert_eq!(response.status(), 201, "creating {name}");
        response.json().await.expect("a product body")
    }

    /// Reads a product, waiting for the read model to reach `min_version`.
    pub async fn product(&self, id: Uuid, min_version: i64) -> Product {
        let response = self
            .get(&format!("/products/{id}?min_version={min_version}"))
            .await;
        assert_eq!(response.status(), 200);
        assert!(
            response.headers().get("x-stale").is_none(),
            "the read model did not reach version {min_version} in time"
        );
        response.json().await.expect("a product body")
    }

    /// Polls the read model until `done` holds for the product.
    pub async fn wait_for_product(&self, id: Uuid, done: impl Fn(&Product) -> bool) -> Product {
        let path = format!("/products/{id}");
        eventually(
            &format!("product {id} to reach the expected state"),
            || async {
                let response = self.get(&path).await;
                if response.status() != 200 {
                    return None;
                }
                let product: Product = response.json().await.expect("a product body");
                done(&product).then_some(product)
            },
        )
        .await
    }

    /// The types of the events in `stream_id`, straight from the store.
    pub async fn event_types(&self, stream_id: &str) -> Vec<String> {
        self.db
            .store()
            .read_stream(stream_id, 1)
            .await
            .expect("reading a stream")
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    /// Publishes an order-service event by hand, as order-service's relay would.
    pub async fn publish_order_event(
        &self,
        order_id: Uuid,
        stream_version: i64,
        event_type: &str,
        payload: &Value,
    ) {
        self.publish_order_event_at(order_id, stream_version, event_type, 1, payload)
            .await;
    }

    /// Publishes an order-service event by hand written at `schema_version`.
    pub async fn publish_order_event_at(
        &self,
        order_id: Uuid,
        stream_version: i64,
        event_type: &str,
        schema_version: i32,
        payload: &Value,
    ) {
        let (subject, headers, body) = self
            .order_event(
                order_id,
                stream_version,
                event_type,
                schema_version,
                payload,
            )
            .await;
        testing::publish_stored(&self.js, subject, headers, body).await;
    }

    /// Sends without waiting for the ack, so many events can be in flight at once.
    pub async fn send_order_event(
        &self,
        order_id: Uuid,
        stream_version: i64,
        event_type: &str,
        payload: &Value,
    ) -> jetstream::context::PublishAckFuture {
        self.send_order_event_at(order_id, stream_version, event_type, 1, payload)
            .await
    }

    /// [`TestApp::send_order_event`] of an event written at `schema_version`.
    pub async fn send_order_event_at(
        &self,
        order_id: Uuid,
        stream_version: i64,
        event_type: &str,
        schema_version: i32,
        payload: &Value,
    ) -> jetstream::context::PublishAckFuture {
        let (subject, headers, body) = self
            .order_event(
                order_id,
                stream_version,
                event_type,
                schema_version,
                payload,
            )
            .await;
        self.js
            .publish_with_headers(subject, headers, body)
            .await
            .expect("published")
    }

    /// The subject, headers (with a `Nats-Msg-Id`) and body of an order-service event, as
    /// order-service's relay would send it, once its stream exists.
    async fn order_event(
        &self,
        order_id: Uuid,
        stream_version: i64,
        event_type: &str,
        schema_version: i32,
        payload: &Value,
    ) -> (String, async_nats::HeaderMap, bytes::Bytes) {
        let (stream, prefix) = (&self.names.other_stream, &self.names.other_subjects);
        event_store::nats::ensure_stream(&self.js, stream, prefix)
            .await
            .expect("the order events stream exists");
        let stream_id = format!("order-{order_id}");
        let event_id = Uuid::now_v7();
        let correlation_id = format!("test-{order_id}");
        let event = RecordedEvent {
            position: chrono::Utc::now().timestamp_micros(),
            stream_id: stream_id.clone(),
            stream_version,
            event_id,
            event_type: event_type.to_owned(),
            schema_version,
            payload: payload.clone(),
            // As order-service writes it for a request with an `Idempotency-Key`.
            metadata: Metadata {
                correlation_id: Some(correlation_id),
                idempotency_key: Some(order_key(order_id)),
                ..Metadata::default()
            },
            recorded_at: chrono::Utc::now(),
        };
        let (headers, body) = testing::as_relayed("order-service", &event);
        (format!("{prefix}.{stream_id}.{event_type}"), headers, body)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let streams = vec![
            self.names.own_stream.clone(),
            self.names.other_stream.clone(),
        ];
        testing::delete_streams(&testing::nats_url(), streams);
    }
}

/// The `Idempotency-Key` the order events published by hand carry in their metadata.
pub fn order_key(order_id: Uuid) -> String {
    format!("key-{order_id}")
}

/// An `OrderPlaced` payload as order-service writes it (with fields product-service ignores).
pub fn order_placed(order_id: Uuid, lines: &[(Uuid, i64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(product_id, quantity)| {
            json!({ "product_id": product_id, "quantity": quantity, "unit_price_cents": 100 })
        })
        .collect();
    json!({
        "order_id": order_id,
        "customer_id": "customer-1",
        "lines": lines,
        "total_cents": 100,
    })
}
