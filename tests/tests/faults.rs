//! Crashes and outages under load: after kill -9 of either service, or NATS stopping, every
//! acknowledged write is reflected exactly once, every order settles, and stock adds up.
//! The load and the invariants are shared with the other fault tests (`tests::faults`).

use std::time::{Duration, Instant};

use event_store::testing::{unique, NatsServer};
use tests::faults::{assert_consistent, create_products, Fault, Load};
use tests::TestSystem;

#[tokio::test]
async fn killing_either_service_under_load_loses_and_doubles_nothing() {
    let mut system = TestSystem::start().await;
    let products = create_products(&system, 3).await;
    let customer = unique("crash");
    let load = Load::start(&system, &products, &customer);

    let mut kills = 0;
    let mut ended = Instant::now();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        system.products.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        system.products.restart();
        system.products.wait_ready().await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        system.orders.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        system.orders.restart();
        ended = Instant::now();
        kills += 2;
        system.orders.wait_ready().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acknowledged = load.finish().await.acknowledged();

    assert!(
        acknowledged.len() >= 20,
        "too little load got through: {}",
        acknowledged.len()
    );
    let fault = Fault {
        name: "kill9_services",
        injected: kills,
        ended,
    };
    assert_consistent(&system, &products, &customer, &acknowledged, &fault).await;
}

#[tokio::test]
async fn with_nats_stopped_under_load_writes_succeed_and_everything_catches_up() {
    let mut nats = NatsServer::start();
    let system = TestSystem::start_with_nats(nats.url()).await;
    let products = create_products(&system, 2).await;
    let customer = unique("outage");
    let load = Load::start(&system, &products, &customer);

    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.stop();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    nats.restart();
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acknowledged = load.finish().await.acknowledged();

    // With NATS away, orders were still taken: the outage costs latency, not writes.
    assert!(
        acknowledged.len() >= 20,
        "too few orders were taken: {}",
        acknowledged.len()
    );
    let fault = Fault {
        name: "nats_outage",
        injected: 1,
        ended,
    };
    assert_consistent(&system, &products, &customer, &acknowledged, &fault).await;
}
