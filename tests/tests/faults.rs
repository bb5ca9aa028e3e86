//! Crashes and outages under load: after kill -9 of either service, or NATS stopping, every
//! acknowledged write is reflected exactly once, every order settles, and stock adds up.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use event_store::testing::NatsServer;
use serde_json::{json, Value};
use tests::TestSystem;

const INITIAL_STOCK: i64 = 40;
const MAX_ORDERS: usize = 150;

/// Places orders from four clients until stopped; returns the ids of the acknowledged ones.
/// Requests that fail while a service is down are not acknowledged and not counted.
fn start_load(
    system: &TestSystem,
    products: &[String],
    customer: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let url = format!("{}/orders", system.orders.base_url);
    let (products, customer) = (products.to_vec(), customer.to_owned());
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let workers = (0..4).map(|w| {
            let (client, url, products, customer, stop) =
                (client.clone(), url.clone(), products.clone(), customer.clone(), stop.clone());
            async move {
                let mut acknowledged = Vec::new();
                let mut i = w;
                while !stop.load(Ordering::Relaxed) && i < MAX_ORDERS {
                    let lines = json!([{ "product_id": products[i % products.len()], "quantity": 1 + i % 3 }]);
                    let sent = client
                        .post(&url)
                        .json(&json!({ "customer_id": customer, "lines": lines }))
                        .send()
                        .await;
                    if let Ok(response) = sent {
                        if response.status() == 201 {
                            let body: Value = response.json().await.unwrap();
                            acknowledged.push(body["id"].as_str().unwrap().to_owned());
                        }
                    }
                    i += 4;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acknowledged
            }
        });
        futures::future::join_all(workers).await.concat()
    })
}

async fn create_products(system: &TestSystem, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = system
            .create_product(&format!("Item {i}"), 1_000 + i as i64, INITIAL_STOCK)
            .await;
        system.catalogue_has(&id, 1).await;
        ids.push(id);
    }
    ids
}

/// Checks the invariants through both HTTP APIs once everything has settled.
async fn assert_consistent(
    system: &TestSystem,
    products: &[String],
    customer: &str,
    acknowledged: &[String],
) {
    // Every order, acknowledged or not (a crash can lose a response, not a commit), settles.
    let orders = system
        .eventually(
            format!(
                "{}/orders?customer_id={customer}&limit=200",
                system.orders.base_url
            ),
            |b| {
                let orders = b["orders"].as_array().unwrap();
                let present = |id: &String| orders.iter().any(|o| o["id"] == id.as_str());
                acknowledged.iter().all(present) && orders.iter().all(|o| o["status"] != "pending")
            },
        )
        .await;
    let orders = orders["orders"].as_array().unwrap();
    for id in acknowledged {
        let copies = orders.iter().filter(|o| o["id"] == id.as_str()).count();
        assert_eq!(copies, 1, "acknowledged order {id} appears {copies} times");
    }
    let mut reserved: HashMap<&str, i64> = HashMap::new();
    for order in orders.iter().filter(|o| o["status"] == "confirmed") {
        for line in order["lines"].as_array().unwrap() {
            *reserved
                .entry(line["product_id"].as_str().unwrap())
                .or_default() += line["quantity"].as_i64().unwrap();
        }
    }
    for id in products {
        let expected = reserved.get(id.as_str()).copied().unwrap_or(0);
        let product = system
            .eventually(format!("{}/products/{id}", system.products.base_url), |p| {
                p["stock_reserved"] == expected
            })
            .await;
        assert_eq!(
            product["stock_available"].as_i64().unwrap() + expected,
            INITIAL_STOCK,
            "stock of {id} does not add up: {product}"
        );
        // order-service's catalogue converges on the same stock.
        system
            .eventually(
                format!("{}/catalog/products/{id}", system.orders.base_url),
                |c| c["stock_available"] == product["stock_available"],
            )
            .await;
        // No order reserved a product twice.
        let (_, events) = system
            .get(format!("{}/products/{id}/events", system.products.base_url))
            .await;
        let mut per_order: HashMap<String, usize> = HashMap::new();
        for e in events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "StockReserved")
        {
            *per_order
                .entry(e["payload"]["order_id"].to_string())
                .or_default() += 1;
        }
        assert!(
            per_order.values().all(|n| *n == 1),
            "a reservation was applied twice: {per_order:?}"
        );
    }
}

#[tokio::test]
async fn killing_either_service_under_load_loses_and_doubles_nothing() {
    let mut system = TestSystem::start().await;
    let products = create_products(&system, 3).await;
    let customer = event_store::testing::unique("crash");
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&system, &products, &customer, stop.clone());

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
        system.orders.wait_ready().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = load.await.unwrap();

    assert!(
        acknowledged.len() >= 20,
        "too little load got through: {}",
        acknowledged.len()
    );
    assert_consistent(&system, &products, &customer, &acknowledged).await;
}

#[tokio::test]
async fn with_nats_stopped_under_load_writes_succeed_and_everything_catches_up() {
    let mut nats = NatsServer::start();
    let system = TestSystem::start_with_nats(nats.url()).await;
    let products = create_products(&system, 2).await;
    let customer = event_store::testing::unique("outage");
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(&system, &products, &customer, stop.clone());

    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.stop();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    nats.restart();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = load.await.unwrap();

    // With NATS away, orders were still taken: the outage costs latency, not writes.
    assert!(
        acknowledged.len() >= 20,
        "too few orders were taken: {}",
        acknowledged.len()
    );
    assert_consistent(&system, &products, &customer, &acknowledged).await;
}
