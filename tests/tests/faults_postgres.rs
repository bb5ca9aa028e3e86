//! Postgres stopped under load, on a private cluster: while it is down both services answer
//! every request quickly, readiness and writes with 503 and the usual JSON error body (never
//! a 500, never a hang); once it is back they become ready by themselves, without a restart,
//! and nothing acknowledged is lost or doubled.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_store::testing::{self, unique, PgServer};
use serde_json::Value;
use tests::faults::{check_consistent, create_products, Answer, Fault, Kind, Load};
use tests::{ServiceProcess, TestSystem};

/// How long Postgres stays down.
const OUTAGE: Duration = Duration::from_secs(4);
/// Every request must be answered within this, database or not.
const ANSWER_BOUND: Duration = Duration::from_secs(5);
const READY_PROBE_PAUSE: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_restarted_under_load_services_answer_503_and_recover_by_themselves() {
    // Fail fast, with a hint, when the shared NATS is down.
    drop(testing::connect_nats().await);
    let mut postgres = tokio::task::block_in_place(PgServer::start);
    let system = TestSystem::start_on(&postgres.url(), testing::nats_url()).await;
    let products = create_products(&system, 3).await;
    let customer = unique("pgdown");
    let load = Load::start(&system, &products, &customer);

    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| postgres.stop());
    let down = Instant::now();
    let probes = probe_readiness(&system, OUTAGE).await;
    tokio::task::block_in_place(|| postgres.restart());
    let up = Instant::now();

    // Both become ready again on their own: the processes were never restarted.
    system.products.wait_ready().await;
    system.orders.wait_ready().await;
    let ready_after = up.elapsed();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let report = load.finish().await;
    let acknowledged = report.acknowledged();

    // While Postgres was down: readiness said so, promptly, in JSON.
    for service in [system.products.name, system.orders.name] {
        assert!(
            probes.iter().any(|p| p.service == service),
            "{service} was not probed during the outage: {probes:?}"
        );
    }
    for probe in &probes {
        assert!(
            probe.latency < ANSWER_BOUND && probe.status == Some(503),
            "{} /health/ready during the outage: {probe:?}",
            probe.service
        );
        assert_eq!(probe.body["database"], "down", "{probe:?}");
        assert_eq!(probe.body["error"], "unavailable", "{probe:?}");
    }
    // Every write of the load, before, during and after, was answered within the bound, with
    // success or 503 and the error body: never a 500, never a hang.
    for answer in &report.answers {
        let answered = answer.latency < ANSWER_BOUND && answer.status.is_some();
        assert!(answered, "a request hung or went unanswered: {answer:?}");
        match answer.status {
            Some(200 | 201) => {}
            Some(503) => assert_unavailable_body(answer),
            _ => panic!("unexpected answer: {answer:?}"),
        }
    }
    // Writes sent while it was down were refused, both services' ones.
    let during = report.sent_between(down, up);
    for kind in [Kind::PlaceOrder, Kind::ChangePrice] {
        assert!(
            during
                .iter()
                .any(|a| a.kind == kind && a.status == Some(503)),
            "no {kind:?} got 503 during the outage: {during:?}"
        );
    }
    // And writes were taken again after it.
    let after = report.sent_between(up + ready_after, Instant::now());
    assert!(
        after.iter().any(|a| a.status == Some(201)),
        "no order was taken after Postgres returned: {after:?}"
    );

    let mut verdict = check_consistent(&system, &products, &customer, &acknowledged).await;
    verdict
        .check_history_and_audit(&system, &HashSet::new())
        .await;
    eprintln!(
        "postgres outage: readiness probes {:?} ms; {} requests, {} answered 503, ready {} ms \
         after the restart",
        probes
            .iter()
            .map(|p| p.latency.as_millis())
            .collect::<Vec<_>>(),
        report.answers.len(),
        report
            .answers
            .iter()
            .filter(|a| a.status == Some(503))
            .count(),
        ready_after.as_millis()
    );
    verdict.report(&Fault {
        name: "postgres_restart",
        injected: 1,
        ended: up,
    });
}

/// One answer of `/health/ready`.
#[derive(Debug)]
struct Probe {
    service: &'static str,
    latency: Duration,
    status: Option<u16>,
    body: Value,
}

/// Asks both services for readiness every [`READY_PROBE_PAUSE`] for `duration`.
async fn probe_readiness(system: &TestSystem, duration: Duration) -> Vec<Probe> {
    let stop = Arc::new(AtomicBool::new(false));
    let probe = |service: &ServiceProcess| {
        let (name, url) = (service.name, format!("{}/health/ready", service.base_url));
        let stop = stop.clone();
        async move {
            let client = reqwest::Client::builder()
                .timeout(ANSWER_BOUND * 2)
                .build()
                .expect("an HTTP client");
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let (status, body) = match client.get(&url).send().await {
                    Ok(r) => (
                        Some(r.status().as_u16()),
                        r.json().await.unwrap_or(Value::Null),
                    ),
                    Err(e) => (None, Value::String(e.to_string())),
                };
                answers.push(Probe {
                    service: name,
                    latency: sent.elapsed(),
                    status,
                    body,
                });
                tokio::time::sleep(READY_PROBE_PAUSE).await;
            }
            answers
        }
    };
    let probes = futures::future::join(probe(&system.products), probe(&system.orders));
    let timer = async {
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
    };
    let ((products, orders), ()) = futures::future::join(probes, timer).await;
    products.into_iter().chain(orders).collect()
}

fn assert_unavailable_body(answer: &Answer) {
    assert_eq!(answer.body["error"], "unavailable", "{answer:?}");
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "a 503 without a message: {answer:?}"
    );
}
