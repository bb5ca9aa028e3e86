//! A run's system: both services started by [`TestSystem`] (release binaries, fresh databases,
//! a NATS namespace of their own, `DATABASE_POOL_SIZE` from `--pool-size`), their process ids,
//! and the products every scenario uses.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use futures::{stream, StreamExt, TryStreamExt};
use uuid::Uuid;

use super::api::Api;
use super::cli::RunArgs;
use super::cpu;
use super::process::{binary_path, check_binaries, child_pid, SERVICES};
use super::schedule::ClosedLoop;
use tests::TestSystem;

/// Connections the run holds at its peak: the raw-INSERT baseline's pool (clients + 2), each
/// service's pool and its leadership, LISTEN and admin connections, and the probes' pools.
pub fn connections_needed(args: &RunArgs) -> u32 {
    args.clients as u32 + 2 + 2 * (args.pool_size + 4) + 16
}

/// Fails at once, saying how to fix it, when Postgres allows fewer connections than the run
/// holds (the baseline would fail half way with "too many clients").
async fn check_connections(args: &RunArgs) -> anyhow::Result<()> {
    let url = event_store::testing::admin_database_url();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let allowed: String = sqlx::query_scalar("SHOW max_connections")
        .fetch_one(&mut conn)
        .await
        .context("asking Postgres for max_connections")?;
    let allowed: u32 = allowed.parse().unwrap_or(0);
    let needed = connections_needed(args);
    if allowed < needed {
        anyhow::bail!(
            "Postgres allows {allowed} connections; this run holds up to {needed} (--clients \
             {} and --pool-size {}). Raise it, e.g. `ALTER SYSTEM SET max_connections = 200` \
             and restart Postgres, or lower --clients or --pool-size.",
            args.clients,
            args.pool_size
        );
    }
    Ok(())
}

/// Requests in flight while setting up (creating products, waiting for them).
const SETUP_CONCURRENCY: usize = 16;
/// So much stock that no order of a run is ever rejected for want of it.
pub const PLENTY: i64 = 1_000_000_000;

pub struct Bench {
    pub system: TestSystem,
    pub api: Api,
    pub args: RunArgs,
    /// `(name, pid)` of each service process.
    pub pids: Vec<(&'static str, u32)>,
    /// The services' databases.
    pub databases: Vec<String>,
    /// One product per client, so concurrent price changes never conflict.
    pub client_products: Vec<Uuid>,
    /// The products the price propagation measurement changes in turn.
    pub probe_products: Vec<Uuid>,
    /// The products orders are spread over, with plenty of stock.
    pub order_products: Vec<Uuid>,
    /// Orders placed so far; the reads use them.
    pub orders: Vec<Uuid>,
    /// The Postgres backend of the table probe in use, set apart in the CPU figures.
    probe_backend: std::sync::Mutex<Option<u32>>,
}

impl Bench {
    pub async fn start(args: RunArgs) -> anyhow::Result<Bench> {
        check_binaries()?;
        check_connections(&args).await?;
        let pool = ("DATABASE_POOL_SIZE".to_owned(), args.pool_size.to_string());
        let system = TestSystem::start_with_env(vec![pool]).await;
        let mut pids = Vec::new();
        for name in SERVICES {
            let pid = child_pid(&binary_path(name)?)
                .with_context(|| format!("finding the process of {name}"))?;
            pids.push((name, pid));
        }
        let api = Api::new(&system.products.base_url, &system.orders.base_url)?;
        let databases = vec![
            system.products_db.name.clone(),
            system.orders_db.name.clone(),
        ];
        let mut bench = Bench {
            system,
            api,
            pids,
            databases,
            client_products: Vec::new(),
            probe_products: Vec::new(),
            order_products: Vec::new(),
            orders: Vec::new(),
            probe_backend: std::sync::Mutex::new(None),
            args,
        };
        bench.client_products = bench.create_products("client", bench.args.clients).await?;
        bench.probe_products = bench
            .create_products("probe", bench.args.probe_products)
            .await?;
        bench.order_products = bench
            .create_products("stock", bench.args.order_products)
            .await?;
        Ok(bench)
    }

    /// Creates `n` products and waits until order-service's catalogue has them all.
    async fn create_products(&self, prefix: &str, n: usize) -> anyhow::Result<Vec<Uuid>> {
        let ids: Vec<Uuid> = concurrently(0..n, |i| {
            let api = self.api.clone();
            let name = format!("{prefix} {i}");
            async move { api.create_product(&name, 1_000, PLENTY).await }
        })
        .await?;
        self.catalogue_has(ids.iter().map(|id| (*id, 1))).await?;
        Ok(ids)
    }

    /// Waits until the catalogue serves each product at (at least) its version.
    pub async fn catalogue_has(
        &self,
        versions: impl Iterator<Item = (Uuid, i64)>,
    ) -> anyhow::Result<()> {
        concurrently(versions, |(id, version)| {
            let api = self.api.clone();
            async move {
                for _ in 0..20 {
                    if api.catalog_version(id, Some(version)).await? >= version {
                        return Ok(());
                    }
                }
                anyhow::bail!("the catalogue never reached version {version} of product {id}")
            }
        })
        .await?;
        Ok(())
    }

    /// Where the CPU went so far (see [`cpu`]).
    pub fn cpu_snapshot(&self) -> cpu::Snapshot {
        let mut processes = self.pids.clone();
        processes.extend(self.probe_backend().map(|pid| (cpu::POSTGRES_PROBE, pid)));
        cpu::snapshot(&processes, &self.databases)
    }

    /// The table probe now queries on the backend `pid`: its CPU is counted apart from the
    /// services' backends from the next snapshot on.
    pub fn set_probe_backend(&self, pid: u32) {
        *self.probe_backend.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid);
    }

    /// The table probe's backend, once it has one.
    pub fn probe_backend(&self) -> Option<u32> {
        *self.probe_backend.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn closed_loop(&self) -> ClosedLoop {
        ClosedLoop {
            clients: self.args.clients,
            warmup: self.args.warmup(),
            measure: self.args.duration(),
        }
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.args.drain_timeout)
    }
}

/// Runs `f` over `items`, a few at a time, collecting the results in any order.
pub async fn concurrently<I, F, Fut, T>(items: I, f: F) -> anyhow::Result<Vec<T>>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    stream::iter(items)
        .map(f)
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect()
        .await
}
