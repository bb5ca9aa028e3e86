//! Breaking the broker on purpose, for the tests of repairs from the store
//! (tests/tests/faults_broker.rs): a test system's JetStream streams, emptied, deleted, purged
//! or holed, and the checks that the services converged anyway.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::Value;

use crate::TestSystem;

/// How long a repair may take before a test calls it a failure: a gap is noticed within a
/// relay tick or a consumer's grace (seconds), asked for, and sent again.
pub const REPAIR_BOUND: Duration = Duration::from_secs(60);

/// The JetStream streams of one test system.
pub struct Broker {
    js: jetstream::Context,
    namespace: String,
}

impl Broker {
    pub async fn connect(nats_url: &str, namespace: &str) -> Broker {
        let client = event_store::nats::connect(nats_url, None)
            .await
            .expect("connecting to NATS");
        Broker {
            js: jetstream::new(client),
            namespace: namespace.to_owned(),
        }
    }

    /// product-service's stream.
    pub fn products(&self) -> String {
        format!("{}_product_events", self.namespace)
    }

    /// order-service's stream.
    pub fn orders(&self) -> String {
        format!("{}_order_events", self.namespace)
    }

    async fn stream(&self, name: &str) -> jetstream::stream::Stream {
        self.js.get_stream(name).await.expect("the stream")
    }

    /// (messages held, first sequence, last sequence); zeros when the stream is missing.
    pub async fn state(&self, name: &str) -> (u64, u64, u64) {
        match self.js.get_stream(name).await {
            Ok(stream) => match stream.get_info().await {
                Ok(info) => (
                    info.state.messages,
                    info.state.first_sequence,
                    info.state.last_sequence,
                ),
                Err(_) => (0, 0, 0),
            },
            Err(_) => (0, 0, 0),
        }
    }

    /// Waits until the stream's last sequence reaches `sequence` (published and acknowledged).
    pub async fn wait_for_sequence(&self, name: &str, sequence: u64) {
        let deadline = Instant::now() + REPAIR_BOUND;
        while self.state(name).await.2 < sequence {
            assert!(Instant::now() < deadline, "{name} never reached {sequence}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The subjects product-service's stream captures (`<prefix>.>`).
    pub fn products_prefix(&self) -> String {
        format!("{}.product.events", self.namespace)
    }

    /// Deletes stream `name` and, at the same moment, declares it again from a second
    /// connection, until the stream left behind has no store (`broken`, which looks at the
    /// server's files). nats-server takes a deleted stream off its books before it removes
    /// its files, and a stream declared in between loses its message directory
    /// (`event_store::nats::REDECLARE_AFTER`). Returns how many tries it took (1 to 70 here,
    /// under load too); panics after 1,000, for a server without the race (the test would
    /// then show nothing).
    pub async fn declare_while_deleting(
        &self,
        name: &str,
        subject_prefix: &str,
        nats_url: &str,
        broken: impl Fn() -> bool,
    ) -> usize {
        let client = event_store::nats::connect(nats_url, None)
            .await
            .expect("connecting to NATS");
        let other = event_store::nats::jetstream(client);
        for attempt in 1..=1_000 {
            // A create request, not a declare: a declare asks first whether the stream
            // exists, and its create then comes a round trip after the delete.
            let config = event_store::nats::stream_config(name, subject_prefix, 1);
            let (_, _) = tokio::join!(self.js.delete_stream(name), other.create_stream(config));
            // Whichever ran first, the stream is there afterwards.
            event_store::nats::ensure_stream(&self.js, name, subject_prefix)
                .await
                .expect("declaring the stream");
            if broken() {
                return attempt;
            }
        }
        panic!("1,000 deletes raced with a declare and never left {name} without a store");
    }

    pub async fn delete(&self, name: &str) {
        self.js
            .delete_stream(name)
            .await
            .expect("deleting a stream");
    }

    pub async fn purge(&self, name: &str) -> u64 {
        self.stream(name)
            .await
            .purge()
            .await
            .expect("purging a stream")
            .purged
    }

    /// Deletes the messages at `sequences` (the JetStream API's message DELETE); how many
    /// were there to delete.
    pub async fn delete_messages(&self, name: &str, sequences: impl Iterator<Item = u64>) -> usize {
        let stream = self.stream(name).await;
        let mut deleted = 0;
        for sequence in sequences {
            if stream.delete_message(sequence).await.unwrap_or(false) {
                deleted += 1;
            }
        }
        deleted
    }
}

/// Waits until order-service's catalogue holds every product of `ids` at the version and
/// price product-service reports, returning how long it took; panics past [`REPAIR_BOUND`]
/// naming the products that still disagree.
pub async fn catalogue_agrees(system: &TestSystem, ids: &[String]) -> Duration {
    let started = Instant::now();
    loop {
        let mut disagree = Vec::new();
        for id in ids {
            let (_, product) = system
                .get(format!("{}/products/{id}", system.products.base_url))
                .await;
            let (status, entry) = system
                .get(format!("{}/catalog/products/{id}", system.orders.base_url))
                .await;
            let same = |field: &str| product[field] == entry[field];
            if status != 200 || !same("version") || !same("price_cents") {
                disagree.push(describe(id, &product, status, &entry));
            }
        }
        if disagree.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < REPAIR_BOUND,
            "after {REPAIR_BOUND:?} the catalogue still disagrees: {disagree:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn describe(id: &str, product: &Value, status: u16, entry: &Value) -> String {
    match status {
        200 => format!(
            "{id}: v{} at {} in the catalogue, v{} at {} in product-service",
            entry["version"], entry["price_cents"], product["version"], product["price_cents"]
        ),
        _ => format!("{id}: missing from the catalogue ({status})"),
    }
}

/// Dead letters recorded by the service whose database is `pool`, by kind.
pub async fn dead_letters(pool: &sqlx::PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT kind, count(*) FROM dead_letters GROUP BY kind ORDER BY kind")
        .fetch_all(pool)
        .await
        .expect("counting dead letters")
}
