//! Propagation latency, the cost of eventual consistency. An open loop sends commands at a fixed
//! rate; for each, the time from its acknowledgement to the moment order-service serves the
//! result: a price change in the catalogue, or a placed order confirmed (a round trip through
//! product-service's stock reservation).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;
use uuid::Uuid;

use super::api::{Api, OrderState};
use super::bench::Bench;
use super::cli::Probe;
use super::horizon::{Held, HorizonWatch};
use super::pipeline::{self, ConsumerPace};
use super::report::Propagation;
use super::schedule::{open_loop, Schedule};
use super::stats::Latencies;
use super::watch::{Table, Watcher};

/// A change not visible after this long counts as an error.
const GIVE_UP: Duration = Duration::from_secs(120);
/// The HTTP polling probe backs off to this fraction of the time waited so far, so a backlog
/// does not turn it into a flood of GETs against the service it measures.
const BACKOFF_FRACTION: u32 = 20;

/// One command and when its effect became visible.
struct Sample {
    command: Duration,
    visible: Duration,
    http_reads: u64,
    order: Option<Uuid>,
}

/// How the load generator sees a change arrive.
#[derive(Clone)]
enum Watch {
    Table(Arc<Watcher>),
    Http { long_poll: bool, interval: Duration },
}

impl Watch {
    fn new(bench: &Bench, table: Table) -> Watch {
        let interval = bench.args.poll_interval();
        match bench.args.probe {
            Probe::Table => Watch::Table(Arc::new(Watcher::spawn(
                bench.system.orders_db.pool.clone(),
                table,
                interval,
            ))),
            Probe::Http => Watch::Http {
                long_poll: false,
                interval,
            },
            Probe::LongPoll => Watch::Http {
                long_poll: true,
                interval,
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Watch::Table(_) => "read-model table query".into(),
            Watch::Http {
                long_poll: false,
                interval,
            } => format!("HTTP GET polling every {interval:?}+"),
            Watch::Http {
                long_poll: true, ..
            } => "HTTP long poll (?min_version)".into(),
        }
    }

    fn table_queries(&self) -> u64 {
        match self {
            Watch::Table(w) => w.queries(),
            Watch::Http { .. } => 0,
        }
    }

    /// HTTP only: calls `seen(long_poll)` until it answers true; when, and how many GETs.
    /// Polling reads at once, then every `interval` (tokio's timer has 1 ms granularity), or
    /// a twentieth of the time waited if that is longer.
    async fn http_until<F, Fut>(&self, seen: F) -> anyhow::Result<(Instant, u64)>
    where
        F: Fn(bool) -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        let Watch::Http {
            long_poll,
            interval,
        } = *self
        else {
            bail!("not an HTTP probe");
        };
        let start = Instant::now();
        let mut reads = 0;
        loop {
            reads += 1;
            if seen(long_poll).await? {
                return Ok((Instant::now(), reads));
            }
            if start.elapsed() > GIVE_UP {
                bail!("not visible after {GIVE_UP:?}");
            }
            if !long_poll {
                let backoff = start.elapsed() / BACKOFF_FRACTION;
                tokio::time::sleep(interval.max(backoff)).await;
            }
        }
    }

    /// Until the catalogue serves `product` at `version` or later.
    async fn catalogue(
        &self,
        api: &Api,
        product: Uuid,
        version: i64,
    ) -> anyhow::Result<(Instant, u64)> {
        if let Watch::Table(watcher) = self {
            return Ok((watcher.wait(product, version, GIVE_UP).await?.at, 0));
        }
        self.http_until(|long_poll| {
            let api = api.clone();
            async move {
                let min = long_poll.then_some(version);
                Ok(api.catalog_version(product, min).await? >= version)
            }
        })
        .await
    }

    /// Until order-service serves `order` confirmed (its version 2).
    async fn confirmed(&self, api: &Api, order: Uuid) -> anyhow::Result<(Instant, u64)> {
        if let Watch::Table(watcher) = self {
            let seen = watcher.wait(order, 2, GIVE_UP).await?;
            if seen.status.as_deref() != Some("confirmed") {
                bail!("order {order} was {:?}, not confirmed", seen.status);
            }
            return Ok((seen.at, 0));
        }
        self.http_until(|long_poll| {
            let api = api.clone();
            async move {
                match api.order_state(order, long_poll.then_some(2)).await? {
                    OrderState::Confirmed => Ok(true),
                    OrderState::Other => bail!("order {order} was not confirmed"),
                    OrderState::Missing | OrderState::Pending => Ok(false),
                }
            }
        })
        .await
    }
}

/// Price changes at `rate` per second over the probe products in turn, each to a new price
/// (`price_base + i`), until order-service's catalogue serves the new version.
pub async fn price_changes(
    bench: &Bench,
    rate: f64,
    price_base: i64,
) -> anyhow::Result<Propagation> {
    let schedule = Schedule::for_samples(rate, bench.args.samples);
    let watch = Watch::new(bench, Table::Catalog);
    let (api, products, probe) = (
        bench.api.clone(),
        bench.probe_products.clone(),
        watch.clone(),
    );
    let marks = Marks::take(bench).await?;
    let started = Instant::now();
    let run = open_loop(schedule, move |i| {
        let (api, probe) = (api.clone(), probe.clone());
        let product = products[i as usize % products.len()];
        async move {
            let sent = Instant::now();
            let version = api.change_price(product, price_base + i as i64).await?;
            let acked = Instant::now();
            let (seen, http_reads) = probe.catalogue(&api, product, version).await?;
            anyhow::Ok(Sample {
                command: acked - sent,
                visible: seen - acked,
                http_reads,
                order: None,
            })
        }
    })
    .await;
    let name = "price change -> catalogue";
    let (mut p, _) = summarise(
        name,
        rate,
        run.outputs,
        &watch,
        started.elapsed(),
        run.max_lag,
    )?;
    (p.consumers, p.horizon) = marks.paces(bench).await?;
    Ok(p)
}

/// Orders at `rate` per second, one line each over the stock products, until order-service
/// serves them confirmed. The placed orders are kept for the reads.
pub async fn orders(bench: &mut Bench, rate: f64) -> anyhow::Result<Propagation> {
    let schedule = Schedule::for_samples(rate, bench.args.samples);
    let watch = Watch::new(bench, Table::Orders);
    let (api, products, probe) = (
        bench.api.clone(),
        bench.order_products.clone(),
        watch.clone(),
    );
    let marks = Marks::take(bench).await?;
    let started = Instant::now();
    let run = open_loop(schedule, move |i| {
        let (api, probe) = (api.clone(), probe.clone());
        let product = products[i as usize % products.len()];
        async move {
            let sent = Instant::now();
            let order = api.place_order("probe", product, 1).await?;
            let acked = Instant::now();
            let (seen, http_reads) = probe.confirmed(&api, order).await?;
            anyhow::Ok(Sample {
                command: acked - sent,
                visible: seen - acked,
                http_reads,
                order: Some(order),
            })
        }
    })
    .await;
    let name = "order placed -> confirmed";
    let (mut p, placed) = summarise(
        name,
        rate,
        run.outputs,
        &watch,
        started.elapsed(),
        run.max_lag,
    )?;
    (p.consumers, p.horizon) = marks.paces(bench).await?;
    bench.orders.extend(placed);
    Ok(p)
}

/// Where both inboxes stood before a measurement.
struct Marks {
    products: pipeline::Mark,
    orders: pipeline::Mark,
    horizon: HorizonWatch,
}

impl Marks {
    async fn take(bench: &Bench) -> anyhow::Result<Marks> {
        Ok(Marks {
            products: pipeline::mark(&bench.system.products_db.pool).await?,
            orders: pipeline::mark(&bench.system.orders_db.pool).await?,
            horizon: HorizonWatch::start(
                bench.system.products_db.pool.clone(),
                bench.databases.clone(),
            ),
        })
    }

    async fn paces(self, bench: &Bench) -> anyhow::Result<(Vec<ConsumerPace>, Option<Held>)> {
        let held = self.horizon.finish().await;
        let system = &bench.system;
        let paces = vec![
            pipeline::since(&system.products_db.pool, "product-service", self.products).await?,
            pipeline::since(&system.orders_db.pool, "order-service", self.orders).await?,
        ];
        Ok((paces, Some(held)))
    }
}

fn summarise(
    name: &str,
    rate: f64,
    outputs: Vec<anyhow::Result<Sample>>,
    watch: &Watch,
    elapsed: Duration,
    max_lag: Duration,
) -> anyhow::Result<(Propagation, Vec<Uuid>)> {
    let mut visible = Latencies::new()?;
    let mut command = Latencies::new()?;
    let mut http_reads = 0;
    let mut orders = Vec::new();
    for output in outputs {
        match output {
            Ok(sample) => {
                visible.record(sample.visible);
                command.record(sample.command);
                http_reads += sample.http_reads;
                orders.extend(sample.order);
            }
            Err(e) => visible.error(format!("{e:#}")),
        }
    }
    let propagation = Propagation {
        name: name.to_owned(),
        rate,
        visible,
        command,
        probe: watch.describe(),
        probe_requests: http_reads + watch.table_queries(),
        elapsed,
        max_lag,
        consumers: Vec::new(),
        horizon: None,
    };
    Ok((propagation, orders))
}
