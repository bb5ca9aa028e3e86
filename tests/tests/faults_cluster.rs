//! A three-node NATS cluster losing its leaders under load (issue 22): streams with three
//! replicas, both services given every node's URL. One after the other, the node leading
//! product-service's stream, the node leading order-service's stream and the node leading
//! order-service's durable consumer of product events are killed (SIGKILL) and started again a
//! few seconds later. Every acknowledged order settles once, stock adds up, both histories are
//! clean, and the longest stall of each relay and consumer is printed (`stall_ms_*`).
//!
//! Needs a current nats-server in `NATS_CLUSTER_SERVER_BIN` (tests::cluster); skipped without.

use std::time::{Duration, Instant};

use event_store::testing::unique;
use tests::cluster::{self, NatsCluster, Placement};
use tests::faults::{create_products, Fault, Load, Pace};
use tests::ha::{self, Observed, ELECTION_BOUND};

/// How long a killed node stays down: long enough for the others to elect a new leader.
const DOWN: Duration = Duration::from_secs(4);
/// Between a node's restart (once it has caught up) and the next kill.
const BETWEEN: Duration = Duration::from_secs(2);

#[tokio::test]
async fn killing_the_nodes_leading_each_stream_and_the_consumer_under_load_loses_nothing() {
    let test_began = Instant::now();
    let Some(bin) = cluster::server_bin("faults_cluster") else {
        return;
    };
    let mut cluster = NatsCluster::start(bin, Placement::loopback()).await;
    let system = ha::start_system(&cluster).await;
    let products = create_products(&system, 4).await;
    ha::wait_replicated(&cluster, &system).await;
    let customer = unique("cluster");
    // The load outlasts the three faults (about 25 s).
    let pace = Pace::spread(150, 300, Duration::from_secs(30));
    let load = Load::start_across(&system, &[&system.orders], &products, &customer, pace);
    let observed = Observed::start(&system, load, test_began);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let every: Vec<usize> = (0..cluster.len()).collect();
    let mut ended = Instant::now();
    let targets = [
        ha::product_stream(&system),
        ha::order_stream(&system),
        ha::order_service_consumer(&system),
    ];
    for asset in &targets {
        let (leader, _) = cluster
            .wait_leader(asset, &every, None, ELECTION_BOUND)
            .await;
        eprintln!(
            "HA {} kill -9 {} (leading {asset})",
            observed.at(),
            cluster.name(leader)
        );
        cluster.kill9(leader);
        let others: Vec<usize> = every.iter().copied().filter(|&n| n != leader).collect();
        let (elected, took) = cluster
            .wait_leader(asset, &others, Some(leader), ELECTION_BOUND)
            .await;
        eprintln!(
            "HA {} {} leads {asset} after {} ms",
            observed.at(),
            cluster.name(elected),
            took.as_millis()
        );
        tokio::time::sleep(DOWN.saturating_sub(took)).await;
        cluster.restart(leader).await;
        ended = Instant::now();
        let caught_up = cluster.wait_healthy().await;
        eprintln!(
            "HA {} {} restarted, every node current after {} ms",
            observed.at(),
            cluster.name(leader),
            caught_up.as_millis()
        );
        tokio::time::sleep(BETWEEN).await;
    }
    let fault = Fault {
        name: "cluster_leaders_killed",
        injected: targets.len(),
        ended,
    };
    observed
        .conclude(&system, &products, &customer, fault, Vec::new())
        .await;
}
