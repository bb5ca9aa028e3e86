//! End-to-end test support: both services started as processes (the binaries cargo built),
//! each on a fresh database of its own, sharing a NATS namespace no other test uses.
//! [`faults`] holds what the fault tests share: their load, invariants and summary line;
//! [`history`] checks each producer's events against the other service's inbox (every fault
//! test ends with it). The load generator, built on [`TestSystem`], is the `loadgen` crate.
//! The HA tests add a NATS cluster of their own ([`cluster`]), network namespaces to cut a
//! node off ([`netns`]), a meter of how long each consumer and relay stood still ([`stall`])
//! and the wiring they share ([`ha`]).
//!
//! `TEST_SERVICE_LOG_DIR`, when set, receives the output of every service and nats-server
//! process a test starts, one file each.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use event_store::testing::{self, TestDb};
use serde_json::Value;
use uuid::Uuid;

use crate::history::History;

pub mod broker;
pub mod cluster;
pub mod faults;
pub mod ha;
pub mod history;
pub mod netns;
pub mod stall;

/// How long eventual consistency may take before a test calls it a failure (a liveness bound).
pub const SETTLE: Duration = Duration::from_secs(20);
/// How long [`TestSystem::settled_history`] waits for both histories to come clean.
pub const HISTORY_SETTLE: Duration = Duration::from_secs(60);

/// A service binary built by cargo next to this test executable.
pub fn service_binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test executable path");
    dir.pop(); // the executable
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the services first with `cargo build --workspace --bins` \
         (scripts/test.sh does)",
        path.display()
    );
    path
}

/// `<TEST_SERVICE_LOG_DIR>/<name>.log`, opened for appending, when that variable is set.
pub fn log_file(name: &str) -> Option<std::fs::File> {
    let dir = PathBuf::from(std::env::var_os("TEST_SERVICE_LOG_DIR")?);
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .ok()
}

/// One running service process, killed on drop.
pub struct ServiceProcess {
    pub name: &'static str,
    pub base_url: String,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

impl ServiceProcess {
    pub fn start(name: &'static str, env: Vec<(String, String)>) -> ServiceProcess {
        let port = testing::free_port();
        let mut service = ServiceProcess {
            name,
            base_url: format!("http://127.0.0.1:{port}"),
            child: None,
            env,
        };
        service
            .env
            .push(("HTTP_ADDR".into(), format!("127.0.0.1:{port}")));
        service.spawn();
        service
    }

    fn spawn(&mut self) {
        let mut command = Command::new(service_binary(self.name));
        command.arg("serve").envs(self.env.iter().cloned());
        let port = self.base_url.rsplit(':').next().unwrap_or_default();
        if let Some(out) = log_file(&format!("{}-{port}", self.name)) {
            let err = out.try_clone().expect("a service's log file");
            command.stdout(out).stderr(err);
        } else if std::env::var_os("TEST_LOG").is_none() {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        self.child = Some(command.spawn().expect("starting a service binary"));
    }

    /// Kills the process as a crash would (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Another process of the same service with the same settings (database, NATS,
    /// namespace) on a port of its own: a second replica.
    pub fn replica(&self) -> ServiceProcess {
        let env = self
            .env
            .iter()
            .filter(|(name, _)| name != "HTTP_ADDR")
            .cloned()
            .collect();
        ServiceProcess::start(self.name, env)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Waits until the service answers ready.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + SETTLE;
        loop {
            let ready = client
                .get(format!("{}/health/ready", self.base_url))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Both services, their databases and an HTTP client.
pub struct TestSystem {
    pub products: ServiceProcess,
    pub orders: ServiceProcess,
    pub products_db: TestDb,
    pub orders_db: TestDb,
    pub namespace: String,
    pub http: reqwest::Client,
}

impl TestSystem {
    /// Both services on the shared NATS server.
    pub async fn start() -> TestSystem {
        // Fail fast, with a hint, when NATS is down.
        drop(testing::connect_nats().await);
        TestSystem::start_with_nats(testing::nats_url()).await
    }

    /// Both services on the NATS server at `nats_url` (a private one for tests that stop it).
    pub async fn start_with_nats(nats_url: String) -> TestSystem {
        TestSystem::start_on(&testing::admin_database_url(), nats_url).await
    }

    /// Both services on databases of the Postgres server at `postgres_url` (any database of
    /// it; a private [`testing::PgServer`] for tests that stop it) and the NATS server at
    /// `nats_url`.
    pub async fn start_on(postgres_url: &str, nats_url: String) -> TestSystem {
        TestSystem::start_on_with_env(postgres_url, nats_url, Vec::new()).await
    }

    /// Both services on the shared NATS server, each given the variables of `extra` on top
    /// of (and overriding) the ones every service gets, e.g. `DATABASE_POOL_SIZE`.
    pub async fn start_with_env(extra: Vec<(String, String)>) -> TestSystem {
        drop(testing::connect_nats().await);
        TestSystem::start_on_with_env(&testing::admin_database_url(), testing::nats_url(), extra)
            .await
    }

    /// [`TestSystem::start_on`], with `extra` environment variables for both services.
    pub async fn start_on_with_env(
        postgres_url: &str,
        nats_url: String,
        extra: Vec<(String, String)>,
    ) -> TestSystem {
        TestSystem::start_each_with_env(postgres_url, nats_url, extra.clone(), extra).await
    }

    /// [`TestSystem::start_on`], with environment variables of its own for each service
    /// (each its own NATS user, say).
    pub async fn start_each_with_env(
        postgres_url: &str,
        nats_url: String,
        products_extra: Vec<(String, String)>,
        orders_extra: Vec<(String, String)>,
    ) -> TestSystem {
        let products_db = TestDb::empty_on(postgres_url).await;
        let orders_db = TestDb::empty_on(postgres_url).await;
        TestSystem::start_on_databases(
            products_db,
            orders_db,
            nats_url,
            products_extra,
            orders_extra,
        )
        .await
    }

    /// Both services on databases the caller prepared (empty, or migrated and filled: the
    /// services migrate what they find), with environment variables of their own.
    pub async fn start_on_databases(
        products_db: TestDb,
        orders_db: TestDb,
        nats_url: String,
        products_extra: Vec<(String, String)>,
        orders_extra: Vec<(String, String)>,
    ) -> TestSystem {
        testing::init_tracing();
        let namespace = testing::unique("e2e");
        let env = |db: &TestDb, extra: &[(String, String)]| {
            vec![
                ("DATABASE_URL".to_owned(), db.url.clone()),
                ("NATS_URL".to_owned(), nats_url.clone()),
                ("EVENTS_NAMESPACE".to_owned(), namespace.clone()),
                (
                    "RUST_LOG".to_owned(),
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                ),
            ]
            .into_iter()
            .chain(extra.iter().cloned())
            .collect::<Vec<_>>()
        };
        let products = ServiceProcess::start("product-service", env(&products_db, &products_extra));
        // Where the audit finds product-service; a test's own setting comes later and wins.
        let product_service_url = [("PRODUCT_SERVICE_URL".to_owned(), products.base_url.clone())];
        let orders_extra: Vec<_> = product_service_url
            .into_iter()
            .chain(orders_extra)
            .collect();
        let orders = ServiceProcess::start("order-service", env(&orders_db, &orders_extra));
        products.wait_ready().await;
        orders.wait_ready().await;
        TestSystem {
            products,
            orders,
            products_db,
            orders_db,
            namespace,
            http: reqwest::Client::new(),
        }
    }

    pub async fn post(&self, url: String, body: Value) -> (u16, Value) {
        let response = self.http.post(url).json(&body).send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, url: String) -> (u16, Value) {
        let response = self.http.get(url).send().await.expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Creates a product through product-service and returns its id.
    pub async fn create_product(&self, name: &str, price_cents: i64, stock: i64) -> String {
        let (status, body) = self
            .post(
                format!("{}/products", self.products.base_url),
                serde_json::json!({ "name": name, "price_cents": price_cents, "stock": stock }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("product id").to_owned()
    }

    /// Polls `url` until `done` holds for its JSON body, and returns that body.
    pub async fn eventually(&self, url: String, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + SETTLE;
        match self.poll(url.clone(), deadline, done).await {
            Ok(body) => body,
            Err((status, body)) => {
                panic!("{url} did not reach the expected state; last answer {status}: {body}")
            }
        }
    }

    /// Polls `url` until `done` holds for its JSON body (`Ok` with it) or `deadline` passes
    /// (`Err` with the last status and body). Requests that fail count as status 0.
    pub async fn poll(
        &self,
        url: String,
        deadline: Instant,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, (u16, Value)> {
        loop {
            let (status, body) = match self.http.get(&url).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (status, response.json().await.unwrap_or(Value::Null))
                }
                Err(e) => (0, Value::String(e.to_string())),
            };
            if status == 200 && done(&body) {
                return Ok(body);
            }
            if Instant::now() >= deadline {
                return Err((status, body));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until order-service's catalogue knows the product at `version` or later.
    pub async fn catalogue_has(&self, product_id: &str, version: i64) -> Value {
        self.eventually(
            format!("{}/catalog/products/{product_id}", self.orders.base_url),
            |b| b["version"].as_i64().unwrap_or(0) >= version,
        )
        .await
    }

    /// Waits until the order leaves `pending`, returning it.
    pub async fn settled_order(&self, order_id: &str) -> Value {
        self.eventually(format!("{}/orders/{order_id}", self.orders.base_url), |b| {
            b["status"] != "pending"
        })
        .await
    }

    /// Both histories as they stand: product-service's events against order-service's inbox
    /// (`product->order`), and order-service's against product-service's (`order->product`).
    /// `forged` names inbox rows a test published itself.
    pub async fn check_history(&self, forged: &HashSet<Uuid>) -> sqlx::Result<(History, History)> {
        let (products, orders) = (&self.products_db.pool, &self.orders_db.pool);
        let mut product_to_order = history::check(products, orders, forged).await?;
        product_to_order.direction = "product->order".to_owned();
        let mut order_to_product = history::check(orders, products, forged).await?;
        order_to_product.direction = "order->product".to_owned();
        Ok((product_to_order, order_to_product))
    }

    /// [`TestSystem::check_history`] again until both are clean or [`HISTORY_SETTLE`] has
    /// passed (delivery is eventual); the last histories either way.
    pub async fn settled_history(&self, forged: &HashSet<Uuid>) -> (History, History) {
        let deadline = Instant::now() + HISTORY_SETTLE;
        loop {
            let checked = self.check_history(forged).await;
            let done = Instant::now() >= deadline;
            match checked {
                Ok(both) if both.0.is_clean() && both.1.is_clean() => return both,
                Ok(both) if done => return both,
                Err(e) if done => panic!("reading the histories: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Runs `order-service audit` against this system's catalogue and product-service: its
    /// exit code (None when killed by a signal) and what it printed.
    pub async fn run_audit(&self) -> (Option<i32>, String) {
        let output = tokio::process::Command::new(service_binary("order-service"))
            .arg("audit")
            .env("DATABASE_URL", &self.orders_db.url)
            .env("PRODUCT_SERVICE_URL", &self.products.base_url)
            .output()
            .await
            .expect("running order-service audit");
        let mut printed = String::from_utf8_lossy(&output.stdout).into_owned();
        printed.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.code(), printed)
    }

    /// C, the share of order-service's catalogue agreeing with product-service
    /// (`order-service audit`), once it reaches 1 or [`SETTLE`] has passed (the catalogue
    /// follows product-service eventually); the audit's output is printed if it stays below.
    pub async fn audit(&self) -> f64 {
        let deadline = Instant::now() + SETTLE;
        loop {
            let (code, printed) = self.run_audit().await;
            let consistency = audit_consistency(&printed)
                .unwrap_or_else(|| panic!("the audit printed no C ({code:?}): {printed}"));
            if consistency == 1.0 || Instant::now() >= deadline {
                if consistency < 1.0 {
                    eprintln!("{printed}");
                }
                return consistency;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// C from the audit's headline `AUDIT products=N agree=N C=0.950`.
pub fn audit_consistency(printed: &str) -> Option<f64> {
    printed
        .lines()
        .find(|line| line.starts_with("AUDIT "))?
        .split_whitespace()
        .find_map(|field| field.strip_prefix("C="))?
        .parse()
        .ok()
}
