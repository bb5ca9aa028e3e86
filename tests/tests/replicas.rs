//! Two replicas of order-service on one database: both serve HTTP and consume, exactly one runs
//! the relay (the `orders` read model is written inline by every append, so it has no
//! projector to lead), and killing the leader (kill -9, twice, under load) hands the relay to
//! the survivor within seconds with nothing lost or doubled.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use event_store::leader;
use sqlx::PgPool;
use tests::faults::{self, Fault, Load, Pace};
use tests::{ServiceProcess, TestSystem};

/// What one leader of order-service runs; each is led by exactly one replica.
const ROLES: [&str; 1] = ["relay"];
/// How long a takeover may take before the test calls it a failure (a liveness bound).
const HANDOVER: Duration = Duration::from_secs(10);

/// The process leading each role, read from its lock connection's `application_name`.
async fn leaders(pool: &PgPool) -> Vec<Option<u32>> {
    let mut pids = Vec::new();
    for role in ROLES {
        let holder = leader::holder(pool, role)
            .await
            .expect("reading the leader");
        pids.push(holder.and_then(|name| name.rsplit(' ').next()?.parse().ok()));
    }
    pids
}

/// Waits until `pid` leads every role, returning how long that took.
async fn wait_until_sole_leader(pool: &PgPool, pid: u32) -> Duration {
    let started = Instant::now();
    loop {
        let now = leaders(pool).await;
        if now.iter().all(|holder| *holder == Some(pid)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < HANDOVER,
            "replica {pid} did not take over every role; leaders now {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn killing_the_leading_replica_hands_over_within_seconds_and_loses_nothing() {
    let mut system = TestSystem::start().await;
    let mut second = system.orders.replica();
    second.wait_ready().await;
    let pool = system.orders_db.pool.clone();
    let products = faults::create_products(&system, 3).await;
    let customer = event_store::testing::unique("replicas");

    let load = Load::start_across(
        &system,
        &[&system.orders, &second],
        &products,
        &customer,
        Pace::STEADY,
    );
    let mut handovers = Vec::new();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Exactly one live replica leads each role.
        let pids = [system.orders.pid().unwrap(), second.pid().unwrap()];
        let now = leaders(&pool).await;
        assert!(
            now.iter()
                .all(|holder| holder.is_some_and(|pid| pids.contains(&pid))),
            "every role has a leader among {pids:?}: {now:?}"
        );
        let relay_leader = now[0].unwrap();
        let (dead, survivor): (&mut ServiceProcess, u32) = if relay_leader == pids[0] {
            (&mut system.orders, pids[1])
        } else {
            (&mut second, pids[0])
        };
        dead.kill();
        let handover = wait_until_sole_leader(&pool, survivor).await;
        eprintln!("replica {survivor} took over from {relay_leader} in {handover:?}");
        handovers.push(handover);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        dead.restart();
        dead.wait_ready().await;
    }
    let fault = Fault {
        name: "kill9_leader_replica",
        injected: handovers.len(),
        ended: Instant::now(),
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let report = load.finish().await;
    let acknowledged = report.acknowledged();
    for replica in [&system.orders, &second] {
        let taken = report
            .answers
            .iter()
            .filter(|a| a.status == Some(201) && a.url.starts_with(&replica.base_url))
            .count();
        assert!(taken > 0, "{} acknowledged no order", replica.base_url);
    }

    let mut verdict = faults::check_consistent(&system, &products, &customer, &acknowledged).await;
    // Both replicas serve the same orders: each reads what the other took.
    for id in &acknowledged {
        for replica in [&system.orders, &second] {
            let (status, _) = system
                .get(format!("{}/orders/{id}", replica.base_url))
                .await;
            assert_eq!(
                status, 200,
                "{} does not serve order {id}",
                replica.base_url
            );
        }
    }
    eprintln!(
        "HANDOVER-SUMMARY max_ms={}",
        handovers.iter().max().unwrap().as_millis()
    );
    verdict
        .check_history_and_audit(&system, &HashSet::new())
        .await;
    verdict.report(&fault);
}
