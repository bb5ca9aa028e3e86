//! A network partition (issue 22): the NATS nodes run in network namespaces of their own
//! (tests::netns), the services and the test outside. The node leading product-service's
//! stream is cut off from the other two nodes and from the services for ten seconds, under a
//! reduced load; the other two elect a new leader, the services carry on through them, and
//! after the partition heals nothing is lost, doubled or unexpected (the history checker), every
//! acknowledged order settles once and stock adds up. Prints how long the election took, what
//! arrived while the node was cut off, each part's longest stall and the test's duration.
//!
//! Needs root (ip netns, iptables) and a current nats-server in `NATS_CLUSTER_SERVER_BIN`;
//! skipped without (tests::cluster).

use std::time::{Duration, Instant};

use event_store::testing::unique;
use tests::cluster::{self, NatsCluster};
use tests::faults::{create_products, Fault, Load, Pace};
use tests::ha::{self, Observed, ELECTION_BOUND};
use tests::netns::NetLab;

const PARTITION: Duration = Duration::from_secs(10);

#[tokio::test]
async fn cutting_off_the_node_leading_the_product_stream_for_ten_seconds_loses_nothing() {
    let test_began = Instant::now();
    let Some(bin) = cluster::server_bin("faults_partition") else {
        return;
    };
    let lab = match NetLab::create(3) {
        Ok(lab) => lab,
        Err(why) => {
            cluster::skip_or_fail("faults_partition", &why);
            return;
        }
    };
    let cluster = NatsCluster::start(bin, lab.placements()).await;
    let system = ha::start_system(&cluster).await;
    let products = create_products(&system, 3).await;
    ha::wait_replicated(&cluster, &system).await;
    let customer = unique("partition");
    // Reduced, for CI: the load spans the partition and the healing after it.
    let pace = Pace::spread(60, 120, Duration::from_secs(16));
    let load = Load::start_across(&system, &[&system.orders], &products, &customer, pace);
    let observed = Observed::start(&system, load, test_began);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let every: Vec<usize> = (0..cluster.len()).collect();
    let stream = ha::product_stream(&system);
    let (leader, _) = cluster
        .wait_leader(&stream, &every, None, ELECTION_BOUND)
        .await;
    let others: Vec<usize> = every.iter().copied().filter(|&n| n != leader).collect();
    eprintln!(
        "HA {} cutting off {} (leading {stream})",
        observed.at(),
        cluster.name(leader)
    );
    let cut = Instant::now();
    lab.cut(leader);
    let (elected, election) = cluster
        .wait_leader(&stream, &others, Some(leader), ELECTION_BOUND)
        .await;
    let at_election = ha::received(&system).await;
    eprintln!(
        "HA {} {} leads {stream} after {} ms",
        observed.at(),
        cluster.name(elected),
        election.as_millis()
    );
    tokio::time::sleep(PARTITION.saturating_sub(cut.elapsed())).await;
    let at_heal = ha::received(&system).await;
    lab.heal(leader);
    let ended = Instant::now();
    let caught_up = cluster.wait_healthy().await;
    eprintln!(
        "HA {} healed; every node current after {} ms; arrived between the election and the \
         healing: product->order {}, order->product {}",
        observed.at(),
        caught_up.as_millis(),
        at_heal.0 - at_election.0,
        at_heal.1 - at_election.1
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let fault = Fault {
        name: "partition_product_stream_leader",
        injected: 1,
        ended,
    };
    let extra = vec![
        ("election_ms".to_owned(), election.as_millis().to_string()),
        (
            "cut_received_product_to_order".to_owned(),
            (at_heal.0 - at_election.0).to_string(),
        ),
        (
            "cut_received_order_to_product".to_owned(),
            (at_heal.1 - at_election.1).to_string(),
        ),
    ];
    observed
        .conclude(&system, &products, &customer, fault, extra)
        .await;
}
