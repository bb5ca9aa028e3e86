//! Propagation latency, the cost of eventual consistency. An open loop sends commands at a fixed
//! rate; for each, the time from its acknowledgement to the moment order-service serves the
//! result: a price change in the catalogue, or a placed order confirmed (a round trip through
//! product-service's stock reservation). The orders' loop is also each step of the
//! [`super::capacity`] measurement, there with a deadline for the backlog to drain.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use super::bench::Bench;
use super::costs;
use super::cpu::{self, Usage};
use super::horizon::{Held, HorizonWatch};
use super::pipeline::{self, ConsumerPace};
use super::report::Propagation;
use super::schedule::{open_loop, Schedule};
use super::stats::Latencies;
use super::watch::{is_not_visible, NotVisible, Table};

mod probe;

use probe::Watch;

/// A change not visible this long after its acknowledgement counts as an error.
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

/// Price changes at `rate` per second over the probe products in turn, each to a new price
/// (`price_base + i`), until order-service's catalogue serves the new version.
pub async fn price_changes(
    bench: &Bench,
    rate: f64,
    price_base: i64,
) -> anyhow::Result<Propagation> {
    let schedule = Schedule::for_samples(rate, bench.args.samples);
    let watch = Watch::new(bench, Table::Catalog).await?;
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
            let (seen, http_reads) = probe
                .catalogue(&api, product, version, acked + GIVE_UP)
                .await?;
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

/// The time left until `deadline`.
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// An open loop of orders: its figures (costs included) and where the CPU went, from the first
/// order until the consumers' paces were read.
pub struct OrderRun {
    pub propagation: Propagation,
    pub usage: Usage,
    /// Orders acknowledged (or still unanswered) but not confirmed by their deadline: with a
    /// drain deadline, the backlog left when it passed.
    pub late: u64,
    /// From the first send until the last order was seen (or given up).
    pub took: Duration,
    /// When the last send was due, from the first.
    pub last_due: Duration,
}

/// Orders at `rate` per second, one line each over the stock products, until order-service
/// serves them confirmed. The placed orders are kept for the reads.
pub async fn orders(bench: &mut Bench, rate: f64) -> anyhow::Result<OrderRun> {
    order_loop(bench, Schedule::for_samples(rate, bench.args.samples), None).await
}

/// Orders on `schedule`, one line each over the stock products, each awaited until
/// order-service serves it confirmed: at most [`GIVE_UP`] after its acknowledgement and, with
/// `drain`, no later than `drain` after the last send was due (an order unanswered or
/// unconfirmed then is late, and the loop ends). Then what they cost ([`costs`]). The placed
/// orders are kept for the reads.
pub async fn order_loop(
    bench: &mut Bench,
    schedule: Schedule,
    drain: Option<Duration>,
) -> anyhow::Result<OrderRun> {
    let before = bench.cpu_snapshot();
    let watch = Watch::new(bench, Table::Orders).await?;
    let (api, products, probe) = (
        bench.api.clone(),
        bench.order_products.clone(),
        watch.clone(),
    );
    let acked_count = Arc::new(AtomicU64::new(0));
    let counter = acked_count.clone();
    let marks = Marks::take(bench).await?;
    let commits_before = marks.commits();
    let started = Instant::now();
    let last_due = schedule.due(schedule.count.saturating_sub(1));
    let deadline = drain.map(|d| started + last_due + d);
    let run = open_loop(schedule, move |i| {
        let (api, probe, counter) = (api.clone(), probe.clone(), counter.clone());
        let product = products[i as usize % products.len()];
        async move {
            let sent = Instant::now();
            let order = by(deadline, api.place_order("probe", product, 1)).await?;
            counter.fetch_add(1, Ordering::Relaxed);
            let acked = Instant::now();
            let give_up = deadline.map_or(acked + GIVE_UP, |d| d.min(acked + GIVE_UP));
            let (seen, http_reads) = probe.confirmed(&api, order, give_up).await?;
            anyhow::Ok(Sample {
                command: acked - sent,
                visible: seen - acked,
                http_reads,
                order: Some(order),
            })
        }
    })
    .await;
    let ended = Instant::now();
    let late = run
        .outputs
        .iter()
        .filter(|o| o.as_ref().is_err_and(is_not_visible))
        .count() as u64;
    let name = "order placed -> confirmed";
    let (mut p, placed) = summarise(
        name,
        schedule.rate,
        run.outputs,
        &watch,
        started.elapsed(),
        run.max_lag,
    )?;
    p.acked = acked_count.load(Ordering::Relaxed);
    (p.consumers, p.horizon) = marks.paces(bench).await?;
    let usage = cpu::between(&before, &bench.cpu_snapshot());
    let own_queries = p.probe_requests + p.horizon.map_or(0, |h| h.samples);
    let costs = costs::measure(bench, commits_before, ended, p.acked, own_queries, &usage).await?;
    p.costs = Some(costs);
    bench.orders.extend(placed);
    Ok(OrderRun {
        took: ended - started,
        propagation: p,
        usage,
        late,
        last_due,
    })
}

/// `future`, abandoned at `deadline` (if any) as not answered in time.
async fn by<T>(
    deadline: Option<Instant>,
    future: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let Some(deadline) = deadline else {
        return future.await;
    };
    match tokio::time::timeout_at(deadline, future).await {
        Ok(result) => result,
        Err(_) => Err(NotVisible("no answer by the drain deadline".into()).into()),
    }
}

/// Where both inboxes stood before a measurement.
struct Marks {
    products: pipeline::Mark,
    orders: pipeline::Mark,
    horizon: HorizonWatch,
}

impl Marks {
    /// Both databases' commit counts at the marks.
    fn commits(&self) -> i64 {
        self.products.commits() + self.orders.commits()
    }

    async fn take(bench: &Bench) -> anyhow::Result<Marks> {
        Ok(Marks {
            products: pipeline::mark(&bench.system.products_db.pool).await?,
            orders: pipeline::mark(&bench.system.orders_db.pool).await?,
            horizon: HorizonWatch::start(
                bench.system.products_db.pool.clone(),
                bench.databases.clone(),
                bench.probe_backend(),
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
        acked: 0,
        costs: None,
    };
    Ok((propagation, orders))
}
