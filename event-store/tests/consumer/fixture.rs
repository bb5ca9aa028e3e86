//! What the consumer tests share: a database and a JetStream stream of their own, a test
//! reaction that records what it handles, and publishing as the other service's relay would.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use event_store::consumer::{Consumer, ConsumerConfig, ForeignEvent, HandleError, Reaction};
use event_store::testing::{self, connect_nats, init_tracing, unique, TestDb};
use futures::future::BoxFuture;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Records each event it handles in `handled`. A payload `{"poison": true}` is poison; events
/// registered with `fail` fail transiently that many times first, and those registered with
/// `conflict` meet a concurrent write that many times first.
#[derive(Default)]
pub struct RecordHandled {
    failures: Mutex<HashMap<Uuid, u32>>,
    conflicts: Mutex<HashMap<Uuid, u32>>,
    attempts: Mutex<HashMap<Uuid, u32>>,
}

impl RecordHandled {
    pub fn fail(&self, event_id: Uuid, times: u32) {
        self.failures.lock().unwrap().insert(event_id, times);
    }

    pub fn conflict(&self, event_id: Uuid, times: u32) {
        self.conflicts.lock().unwrap().insert(event_id, times);
    }

    pub fn attempts(&self, event_id: Uuid) -> u32 {
        self.attempts
            .lock()
            .unwrap()
            .get(&event_id)
            .copied()
            .unwrap_or(0)
    }
}

impl Reaction for RecordHandled {
    fn name(&self) -> &str {
        "record-handled"
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ForeignEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            *self
                .attempts
                .lock()
                .unwrap()
                .entry(event.event_id)
                .or_default() += 1;
            if event.payload["poison"] == json!(true) {
                return Err(HandleError::Poison("the payload says poison".to_owned()));
            }
            if let Some(left) = self.failures.lock().unwrap().get_mut(&event.event_id) {
                if *left > 0 {
                    *left -= 1;
                    return Err(HandleError::Transient(anyhow::anyhow!("told to fail")));
                }
            }
            if let Some(left) = self.conflicts.lock().unwrap().get_mut(&event.event_id) {
                if *left > 0 {
                    *left -= 1;
                    return Err(HandleError::Conflict("told to conflict".to_owned()));
                }
            }
            sqlx::query(
                "INSERT INTO handled (event_id, stream_id, stream_version) VALUES ($1, $2, $3)",
            )
            .bind(event.event_id)
            .bind(&event.stream_id)
            .bind(event.stream_version)
            .execute(&mut *tx)
            .await
            .map_err(|e| HandleError::Transient(e.into()))?;
            Ok(())
        })
    }
}

pub struct Fixture {
    pub db: TestDb,
    pub js: jetstream::Context,
    pub client: async_nats::Client,
    pub config: ConsumerConfig,
    pub reaction: Arc<RecordHandled>,
}

impl Fixture {
    /// A fixture whose source stream exists, as it does once the other service has started.
    pub async fn new() -> Fixture {
        let fx = Fixture::without_stream().await;
        event_store::nats::ensure_stream(&fx.js, &fx.config.stream, &fx.config.subject_prefix)
            .await
            .unwrap();
        fx
    }

    pub async fn without_stream() -> Fixture {
        init_tracing();
        let db = TestDb::new().await;
        sqlx::query(
            "CREATE TABLE handled (seq bigserial PRIMARY KEY, event_id uuid NOT NULL, \
             stream_id text NOT NULL, stream_version bigint NOT NULL)",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        let client = connect_nats().await;
        let ns = unique("cons");
        let config = ConsumerConfig {
            stream: format!("{ns}_events"),
            subject_prefix: format!("{ns}.events"),
            durable: "test-consumer".to_owned(),
            dead_letter_subject: format!("{ns}.deadletter"),
            max_deliver: 10,
            newer_schema_delay: event_store::consumer::NEWER_SCHEMA_DELAY,
            replicas: 1,
        };
        Fixture {
            db,
            js: jetstream::new(client.clone()),
            client,
            config,
            reaction: Arc::default(),
        }
    }

    pub fn start(&self) -> Running {
        let consumer = Consumer::new(
            self.db.store(),
            self.js.clone(),
            self.config.clone(),
            vec![self.reaction.clone()],
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(consumer.run(shutdown.clone()));
        Running {
            shutdown,
            task,
            pool: self.db.pool.clone(),
        }
    }

    /// Publishes to `<prefix>.<stream>.Happened` and waits for JetStream's ack; returns
    /// whether JetStream dropped it as a duplicate.
    pub async fn publish(
        &self,
        stream_id: &str,
        headers: HeaderMap,
        payload: impl Into<Bytes>,
    ) -> bool {
        let subject = format!("{}.{stream_id}.Happened", self.config.subject_prefix);
        self.js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap()
            .duplicate
    }

    pub async fn publish_event(&self, event_id: Uuid, stream_id: &str, version: i64) {
        let payload = json!({ "version": version }).to_string();
        self.publish(stream_id, headers(event_id, stream_id, version), payload)
            .await;
    }

    /// (event_id, stream_id, version) in the order the reaction handled them.
    pub async fn handled(&self) -> Vec<(Uuid, String, i64)> {
        sqlx::query_as("SELECT event_id, stream_id, stream_version FROM handled ORDER BY seq")
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn dead_letters(&self) -> Vec<(String, String, Vec<u8>)> {
        sqlx::query_as("SELECT consumer, error, payload FROM dead_letters ORDER BY id")
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    /// Waits until the durable consumer has nothing pending or unacknowledged.
    pub async fn drained(&self) {
        let stream = self.js.get_stream(&self.config.stream).await.unwrap();
        eventually(
            Duration::from_secs(20),
            "every message is acknowledged",
            || {
                let stream = stream.clone();
                let durable = self.config.durable.clone();
                async move {
                    let info = stream.consumer_info(&durable).await.unwrap();
                    info.num_pending == 0 && info.num_ack_pending == 0
                }
            },
        )
        .await;
    }
}

impl Drop for Fixture {
    /// Deletes the test's stream, also when the test panicked. Like `TestDb`, on a thread and
    /// runtime of its own, since the test's runtime may be blocked in this drop.
    fn drop(&mut self) {
        testing::delete_streams(&testing::nats_url(), vec![self.config.stream.clone()]);
    }
}

pub struct Running {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
    pool: PgPool,
}

impl Running {
    /// Stops the consumer; returns the dead letters recorded in the test's database so far.
    pub async fn stop(self) -> u64 {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the consumer stops on shutdown")
            .unwrap();
        dead_letter_count(&self.pool).await
    }
}

/// The headers the relay puts on an event's message.
pub fn headers(event_id: Uuid, stream_id: &str, version: i64) -> HeaderMap {
    headers_with(event_id, stream_id, &version.to_string(), &[])
}

pub fn headers_with(event_id: Uuid, stream_id: &str, version: &str, omit: &[&str]) -> HeaderMap {
    let metadata = json!({ "correlation_id": "req-1" }).to_string();
    let id = event_id.to_string();
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("Nats-Msg-Id", id.as_str()),
        ("Es-Event-Type", "Happened"),
        ("Es-Stream-Id", stream_id),
        ("Es-Stream-Version", version),
        ("Es-Position", "1048577"),
        ("Es-Schema-Version", "1"),
        ("Es-Metadata", metadata.as_str()),
    ] {
        if !omit.contains(&name) {
            h.insert(name, value);
        }
    }
    h
}

pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn handled_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM handled")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Dead letters recorded in the test's database (what `es_dead_letters_total` counts).
pub async fn dead_letter_count(pool: &PgPool) -> u64 {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(pool)
        .await
        .unwrap();
    n as u64
}
