//! What the fault tests (tests/tests/faults*.rs) share: a steady load of orders and price
//! changes that records every answer, the invariants counted from what both APIs report, and
//! the one line each fault test prints to stderr for the fault report:
//!
//! ```text
//! FAULT-SUMMARY fault=<name> injected=<n> acknowledged=<n> lost=<n> duplicates=<n> recovery_ms=<n>
//!   history_lost=<n> history_duplicated=<n> history_unexpected=<n> history_out_of_order=<n>
//!   audit_c=<C> [<key>=<value> ...]
//! ```
//!
//! (one line; a test may add keys of its own at the end, such as the HA tests' `stall_ms_*`). `lost` (acknowledged orders missing) and `duplicates` (an order listed twice, a
//! reservation applied twice, a poison message dead-lettered twice) are counted from the data;
//! the `history_*` counts are the [`crate::history`] checker's, summed over both directions;
//! `audit_c` is C of `order-service audit` (the catalogue against product-service).
//! All are printed, and only then asserted (0, and C = 1), so the line appears for a failing
//! run too.
//! `recovery_ms` runs from the end of the fault (the last restart) until everything has
//! settled, before the history check.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::history::History;
use crate::{ServiceProcess, TestSystem, SETTLE};

/// Stock every product starts with.
pub const INITIAL_STOCK: i64 = 40;
/// Orders the load places at most.
pub const MAX_ORDERS: usize = 150;
const ORDER_CLIENTS: usize = 4;
/// Pause between one client's orders: paced so the load outlasts the faults a test injects.
const ORDER_PAUSE: Duration = Duration::from_millis(150);
const MAX_PRICE_CHANGES: usize = 400;
const PRICE_PAUSE: Duration = Duration::from_millis(100);
/// Price clients: more than one, so that one held up by a request waiting out the pool
/// during a Postgres outage does not leave the outage without a price change sent in it.
const PRICE_CLIENTS: usize = 2;
/// The load's client timeout: far above any answer a healthy or degraded service should take,
/// so a hang shows as a missing status with a long latency.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PlaceOrder,
    ChangePrice,
}

/// One request of the load and what came back.
#[derive(Debug, Clone)]
pub struct Answer {
    pub kind: Kind,
    pub url: String,
    pub sent: Instant,
    pub latency: Duration,
    /// None when no HTTP answer came (connection refused, reset, timed out).
    pub status: Option<u16>,
    /// The JSON body, or the transport error as a string.
    pub body: Value,
}

/// How much load, how fast: orders (at most [`MAX_ORDERS`], which the invariants' listing
/// reads back in one page) and price changes in all, and each client's pause between requests.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub orders: usize,
    pub order_pause: Duration,
    pub price_changes: usize,
    pub price_pause: Duration,
}

impl Pace {
    /// The fault tests' usual load: a few seconds of orders, prices for longer.
    pub const STEADY: Pace = Pace {
        orders: MAX_ORDERS,
        order_pause: ORDER_PAUSE,
        price_changes: MAX_PRICE_CHANGES,
        price_pause: PRICE_PAUSE,
    };

    /// `orders` orders and `price_changes` price changes spread evenly over about `span`
    /// (the time requests take comes on top), for faults that last longer than the usual load.
    pub fn spread(orders: usize, price_changes: usize, span: Duration) -> Pace {
        assert!(
            orders <= MAX_ORDERS,
            "at most {MAX_ORDERS} orders are read back"
        );
        let pause =
            |requests: usize, clients: usize| span.mul_f64(clients as f64 / requests.max(1) as f64);
        Pace {
            orders,
            order_pause: pause(orders, ORDER_CLIENTS),
            price_changes,
            price_pause: pause(price_changes, PRICE_CLIENTS),
        }
    }
}

/// A running load: four clients placing orders and two changing prices (as many as the
/// [`Pace`] says, [`Pace::STEADY`] unless given), each waiting for its answer before pausing
/// and sending the next request.
pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Answer>>,
}

impl Load {
    pub fn start(system: &TestSystem, products: &[String], customer: &str) -> Load {
        Load::start_across(system, &[&system.orders], products, customer, Pace::STEADY)
    }

    /// The load at `pace`, with the order clients spread over several order-service replicas.
    pub fn start_across(
        system: &TestSystem,
        order_replicas: &[&ServiceProcess],
        products: &[String],
        customer: &str,
        pace: Pace,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("an HTTP client");
        let orders_urls: Vec<String> = order_replicas
            .iter()
            .map(|replica| format!("{}/orders", replica.base_url))
            .collect();
        let products_url = format!("{}/products", system.products.base_url);
        let (products, customer) = (products.to_vec(), customer.to_owned());
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let orders = (0..ORDER_CLIENTS).map(|first| {
                    let requests = (first..pace.orders).step_by(ORDER_CLIENTS).map(|i| {
                        let lines = json!([{
                            "product_id": products[i % products.len()],
                            "quantity": 1 + i % 3,
                        }]);
                        let body = json!({ "customer_id": customer, "lines": lines });
                        let url = &orders_urls[first % orders_urls.len()];
                        (Kind::PlaceOrder, url.clone(), body)
                    });
                    run_client(
                        client.clone(),
                        requests.collect(),
                        pace.order_pause,
                        stop.clone(),
                    )
                });
                let prices = (0..PRICE_CLIENTS).map(|first| {
                    let requests = (first..pace.price_changes).step_by(PRICE_CLIENTS).map(|i| {
                        let id = &products[i % products.len()];
                        let body = json!({ "price_cents": 1_000 + (i % 50) as i64 });
                        (
                            Kind::ChangePrice,
                            format!("{products_url}/{id}/price"),
                            body,
                        )
                    });
                    run_client(
                        client.clone(),
                        requests.collect(),
                        pace.price_pause,
                        stop.clone(),
                    )
                });
                let (orders, prices) = futures::future::join(
                    futures::future::join_all(orders),
                    futures::future::join_all(prices),
                )
                .await;
                let mut answers = orders.concat();
                answers.extend(prices.concat());
                answers
            }
        });
        Load { stop, task }
    }

    /// Stops the clients after their request in flight and returns every answer.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        LoadReport {
            answers: self.task.await.expect("the load task"),
        }
    }
}

/// Sends `requests` one after the other, `pause` apart, until they run out or `stop`.
async fn run_client(
    client: reqwest::Client,
    requests: Vec<(Kind, String, Value)>,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<Answer> {
    let mut answers = Vec::new();
    for (kind, url, body) in requests {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let sent = Instant::now();
        let (status, body) = match client.post(&url).json(&body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (Some(status), response.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (None, Value::String(e.to_string())),
        };
        answers.push(Answer {
            kind,
            url,
            sent,
            latency: sent.elapsed(),
            status,
            body,
        });
        tokio::time::sleep(pause).await;
    }
    answers
}

pub struct LoadReport {
    pub answers: Vec<Answer>,
}

impl LoadReport {
    /// Ids of the orders the service acknowledged (201). A request that failed while a
    /// service was down is not acknowledged and not counted.
    pub fn acknowledged(&self) -> Vec<String> {
        self.answers
            .iter()
            .filter(|a| a.kind == Kind::PlaceOrder && a.status == Some(201))
            .map(|a| {
                a.body["id"]
                    .as_str()
                    .expect("a placed order's id")
                    .to_owned()
            })
            .collect()
    }

    /// Answers to requests sent in `from..to`.
    pub fn sent_between(&self, from: Instant, to: Instant) -> Vec<&Answer> {
        self.answers
            .iter()
            .filter(|a| a.sent >= from && a.sent < to)
            .collect()
    }
}

/// Creates `n` products with [`INITIAL_STOCK`] each and waits until order-service knows them.
pub async fn create_products(system: &TestSystem, n: usize) -> Vec<String> {
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

/// What was injected, and when it ended.
pub struct Fault {
    pub name: &'static str,
    /// How many faults (kills, outages, poison messages) were injected.
    pub injected: usize,
    /// When the last fault ended (the last restart), from which recovery is timed.
    pub ended: Instant,
}

/// The invariants as counted after the system settled (or the settle bound ran out).
#[derive(Debug, Default)]
pub struct Verdict {
    pub acknowledged: usize,
    pub lost: usize,
    pub duplicates: usize,
    /// Any other broken invariant, in words.
    pub problems: Vec<String>,
    /// Both directions' histories, once checked.
    pub history: Vec<History>,
    /// C of the catalogue audit, once run.
    pub audit: Option<f64>,
    /// More `key=value` fields for the summary line, after the usual ones.
    pub extra: Vec<(String, String)>,
}

impl Verdict {
    /// Prints the FAULT-SUMMARY line (with [`Verdict::extra`] at its end), then asserts nothing was lost, doubled or broken, and
    /// that the histories were checked and are clean.
    pub fn report(&self, fault: &Fault) {
        let recovery_ms = fault.ended.elapsed().as_millis();
        let total = |count: fn(&History) -> usize| self.history.iter().map(count).sum::<usize>();
        let extra: String = self
            .extra
            .iter()
            .map(|(key, value)| format!(" {key}={value}"))
            .collect();
        eprintln!(
            "FAULT-SUMMARY fault={} injected={} acknowledged={} lost={} duplicates={} \
             recovery_ms={recovery_ms} history_lost={} history_duplicated={} \
             history_unexpected={} history_out_of_order={} audit_c={}{extra}",
            fault.name,
            fault.injected,
            self.acknowledged,
            self.lost,
            self.duplicates,
            total(|h| h.lost.count),
            total(|h| h.duplicated.count),
            total(|h| h.unexpected.count),
            total(|h| h.out_of_order.count),
            self.audit
                .map_or_else(|| "none".to_owned(), |c| format!("{c:.3}")),
        );
        assert_eq!(self.lost, 0, "acknowledged orders were lost: {self:?}");
        assert_eq!(self.duplicates, 0, "something was applied twice: {self:?}");
        assert!(self.problems.is_empty(), "invariants broken: {self:?}");
        assert_eq!(self.history.len(), 2, "the histories were not checked");
        for history in &self.history {
            history.assert_clean();
        }
        assert_eq!(
            self.audit,
            Some(1.0),
            "the catalogue disagrees with product-service"
        );
    }

    /// The checks that close every fault test, kept for the report: both histories (waiting,
    /// bounded, for them to come clean; `forged` names inbox rows the test itself published),
    /// then the catalogue audit (waiting, bounded, for C = 1).
    pub async fn check_history_and_audit(&mut self, system: &TestSystem, forged: &HashSet<Uuid>) {
        let (product_to_order, order_to_product) = system.settled_history(forged).await;
        self.history = vec![product_to_order, order_to_product];
        self.audit = Some(system.audit().await);
    }
}

/// Waits for the system to settle, checks the invariants through both APIs, prints the
/// summary line and asserts: every acknowledged order present exactly once, every order
/// settled, each product's reserved stock equal to its confirmed orders' quantities and
/// adding up with the available stock to [`INITIAL_STOCK`], order-service's catalogue agreeing,
/// no reservation applied twice, both histories clean and the audit at C = 1
/// ([`Verdict::check_history_and_audit`]).
pub async fn assert_consistent(
    system: &TestSystem,
    products: &[String],
    customer: &str,
    acknowledged: &[String],
    fault: &Fault,
) {
    let mut verdict = check_consistent(system, products, customer, acknowledged).await;
    verdict
        .check_history_and_audit(system, &HashSet::new())
        .await;
    verdict.report(fault);
}

/// The counting behind [`assert_consistent`], for tests that add checks of their own before
/// reporting; they end with [`Verdict::check_history_and_audit`], which [`Verdict::report`]
/// insists on.
pub async fn check_consistent(
    system: &TestSystem,
    products: &[String],
    customer: &str,
    acknowledged: &[String],
) -> Verdict {
    let deadline = Instant::now() + SETTLE;
    let mut verdict = Verdict {
        acknowledged: acknowledged.len(),
        ..Verdict::default()
    };
    // Every order, acknowledged or not (a crash can lose a response, not a commit), settles.
    let listed = system
        .poll(
            format!(
                "{}/orders?customer_id={customer}&limit=200",
                system.orders.base_url
            ),
            deadline,
            |b| {
                let Some(orders) = b["orders"].as_array() else {
                    return false;
                };
                let present = |id: &String| orders.iter().any(|o| o["id"] == id.as_str());
                acknowledged.iter().all(present) && orders.iter().all(|o| o["status"] != "pending")
            },
        )
        .await;
    let orders = match listed {
        Ok(body) => body["orders"].as_array().cloned().unwrap_or_default(),
        Err((status, body)) => {
            verdict.problems.push(format!(
                "orders did not all appear and settle in {SETTLE:?}; last answer {status}"
            ));
            body["orders"].as_array().cloned().unwrap_or_default()
        }
    };
    for id in acknowledged {
        match orders.iter().filter(|o| o["id"] == id.as_str()).count() {
            0 => verdict.lost += 1,
            copies => verdict.duplicates += copies - 1,
        }
    }
    let pending = orders.iter().filter(|o| o["status"] == "pending").count();
    if pending > 0 {
        verdict
            .problems
            .push(format!("{pending} orders never left pending"));
    }
    let mut reserved: HashMap<&str, i64> = HashMap::new();
    for order in orders.iter().filter(|o| o["status"] == "confirmed") {
        for line in order["lines"].as_array().into_iter().flatten() {
            let product = line["product_id"].as_str().unwrap_or_default();
            *reserved.entry(product).or_default() += line["quantity"].as_i64().unwrap_or(0);
        }
    }
    for id in products {
        let expected = reserved.get(id.as_str()).copied().unwrap_or(0);
        check_product(system, id, expected, deadline, &mut verdict).await;
    }
    verdict
}

async fn check_product(
    system: &TestSystem,
    id: &str,
    expected_reserved: i64,
    deadline: Instant,
    verdict: &mut Verdict,
) {
    let url = format!("{}/products/{id}", system.products.base_url);
    let product = match system
        .poll(url, deadline, |p| p["stock_reserved"] == expected_reserved)
        .await
    {
        Ok(product) => product,
        Err((status, product)) => {
            verdict.problems.push(format!(
                "product {id} reserves {} ({status}), its confirmed orders {expected_reserved}",
                product["stock_reserved"]
            ));
            product
        }
    };
    let available = product["stock_available"].as_i64().unwrap_or(-1);
    if available + expected_reserved != INITIAL_STOCK {
        verdict
            .problems
            .push(format!("stock of {id} does not add up: {product}"));
    }
    // order-service's catalogue converges on the same stock.
    let url = format!("{}/catalog/products/{id}", system.orders.base_url);
    if let Err((status, catalogue)) = system
        .poll(url, deadline, |c| c["stock_available"] == available)
        .await
    {
        verdict.problems.push(format!(
            "order-service's catalogue of {id} says {catalogue} ({status}), \
             product-service {available} available"
        ));
    }
    // No order reserved a product twice.
    let (_, events) = system
        .get(format!("{}/products/{id}/events", system.products.base_url))
        .await;
    let mut per_order: HashMap<String, usize> = HashMap::new();
    for e in events.as_array().into_iter().flatten() {
        if e["type"] == "StockReserved" {
            *per_order
                .entry(e["payload"]["order_id"].to_string())
                .or_default() += 1;
        }
    }
    verdict.duplicates += per_order.values().map(|n| n - 1).sum::<usize>();
}
