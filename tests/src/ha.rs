//! What the HA tests (tests/tests/faults_cluster.rs, faults_partition.rs) share: both services
//! on a [`NatsCluster`] of the test's own (every node's URL in `NATS_URL`, streams with three
//! replicas), the JetStream assets whose leaders the tests go after, and the tail every HA test
//! ends with: the load finished, the invariants and both histories checked, and the
//! FAULT-SUMMARY line printed with each part's longest stall (`stall_ms_*`, [`crate::stall`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use event_store::testing;

use crate::cluster::{Asset, NatsCluster};
use crate::faults::{check_consistent, Fault, Load};
use crate::stall::StallMeter;
use crate::TestSystem;

/// How long a stream or consumer may go without a leader before a test calls it a failure.
/// Raft elections take seconds; a node killed or cut off takes a few more to be noticed.
pub const ELECTION_BOUND: Duration = Duration::from_secs(30);

/// Both services on `cluster`, asking for streams with three replicas.
pub async fn start_system(cluster: &NatsCluster) -> TestSystem {
    TestSystem::start_on_with_env(
        &testing::admin_database_url(),
        cluster.urls(),
        vec![("NATS_STREAM_REPLICAS".to_owned(), "3".to_owned())],
    )
    .await
}

/// product-service's stream.
pub fn product_stream(system: &TestSystem) -> Asset {
    Asset::Stream(format!("{}_product_events", system.namespace))
}

/// order-service's stream.
pub fn order_stream(system: &TestSystem) -> Asset {
    Asset::Stream(format!("{}_order_events", system.namespace))
}

/// order-service's durable consumer of product-service's stream (the `product->order` flow:
/// prices, stock reserved or refused).
pub fn order_service_consumer(system: &TestSystem) -> Asset {
    Asset::Consumer(
        format!("{}_product_events", system.namespace),
        "order-service".to_owned(),
    )
}

/// Waits until both streams and both durable consumers have a leader and every node has
/// caught up with them.
pub async fn wait_replicated(cluster: &NatsCluster, system: &TestSystem) {
    let every: Vec<usize> = (0..cluster.len()).collect();
    let product_service_consumer = Asset::Consumer(
        format!("{}_order_events", system.namespace),
        "product-service".to_owned(),
    );
    for asset in [
        product_stream(system),
        order_stream(system),
        order_service_consumer(system),
        product_service_consumer,
    ] {
        cluster
            .wait_leader(&asset, &every, None, ELECTION_BOUND)
            .await;
    }
    cluster.wait_healthy().await;
}

/// The load and the stall meter of one HA test, and when the test began.
pub struct Observed {
    pub load: Load,
    pub meter: StallMeter,
    /// When the test began (before the cluster started): `test_ms` runs from here.
    pub test_began: Instant,
}

impl Observed {
    /// Starts metering `system` under `load`.
    pub fn start(system: &TestSystem, load: Load, test_began: Instant) -> Observed {
        Observed {
            load,
            meter: StallMeter::start(system, test_began),
            test_began,
        }
    }

    /// Seconds since the test began, for the lines the tests print as they go.
    pub fn at(&self) -> String {
        format!("{:.1}s", self.test_began.elapsed().as_secs_f64())
    }

    /// Finishes the load, waits for the system to settle and checks it (every acknowledged
    /// order once and settled, stock adding up, both histories clean, the catalogue agreeing),
    /// stops the meter, then prints each stall and the FAULT-SUMMARY line (with `extra` and the
    /// test's duration, `test_ms`, at its end) and asserts.
    pub async fn conclude(
        self,
        system: &TestSystem,
        products: &[String],
        customer: &str,
        fault: Fault,
        extra: Vec<(String, String)>,
    ) {
        let acknowledged = self.load.finish().await.acknowledged();
        assert!(
            acknowledged.len() >= 10,
            "too little load got through: {}",
            acknowledged.len()
        );
        let mut verdict = check_consistent(system, products, customer, &acknowledged).await;
        verdict
            .check_history_and_audit(system, &HashSet::new())
            .await;
        let stalls = self.meter.finish().await;
        for stall in &stalls {
            eprintln!(
                "STALL fault={} part={:?} longest_ms={} from={:.1}s",
                fault.name,
                stall.part,
                stall.longest.as_millis(),
                stall.began.as_secs_f64()
            );
        }
        verdict.extra = stalls
            .iter()
            .map(|stall| (stall.key(), stall.longest.as_millis().to_string()))
            .chain(extra)
            .chain([(
                "test_ms".to_owned(),
                self.test_began.elapsed().as_millis().to_string(),
            )])
            .collect();
        verdict.report(&fault);
    }
}

/// Rows in each service's inbox: (order-service's, product-service's), i.e. what has
/// arrived `product->order` and `order->product` so far.
pub async fn received(system: &TestSystem) -> (i64, i64) {
    let count = |pool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM inbox")
            .fetch_one(pool)
            .await
            .expect("counting inbox rows")
    };
    (
        count(&system.orders_db.pool).await,
        count(&system.products_db.pool).await,
    )
}
