//! One run: start the system, run the chosen measurements in order, sample memory throughout,
//! print the report.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::bench::Bench;
use super::cli::{Phase, RunArgs};
use super::cpu::{self, Snapshot};
use super::memory::{sample_peak, Resident, Stop};
use super::report::{Memory, Report};
use super::{baseline, capacity, commands, pipeline, propagation, read_your_writes, reads};

const SAMPLE_MEMORY_EVERY: Duration = Duration::from_millis(250);

pub async fn run(args: RunArgs) -> anyhow::Result<Report> {
    let started = Instant::now();
    println!("Starting both services (release binaries, fresh databases, own NATS namespace)...");
    let mut bench = Bench::start(args).await?;
    println!(
        "  product-service {} (pid {}), order-service {} (pid {}), namespace {}",
        bench.system.products.base_url,
        bench.pids[0].1,
        bench.system.orders.base_url,
        bench.pids[1].1,
        bench.system.namespace
    );
    println!(
        "  both given DATABASE_POOL_SIZE={} (--pool-size); a service that does not read it keeps \
         its own pool (the services before it: 10 connections)",
        bench.args.pool_size
    );
    let stop = Stop::default();
    let samplers: Vec<(&str, u32, JoinHandle<u64>)> = bench
        .pids
        .iter()
        .map(|&(name, pid)| {
            (
                name,
                pid,
                tokio::spawn(sample_peak(pid, SAMPLE_MEMORY_EVERY, stop.clone())),
            )
        })
        .collect();

    let mut report = Report::default();
    if let Err(e) = phases(&mut bench, &mut report, started).await {
        println!("run error: {e:#}");
        report.errors.push(format!("{e:#}"));
    }

    stop.set();
    for (name, pid, sampler) in samplers {
        let sampled_max_kib = sampler.await.unwrap_or(0);
        let now = Resident::of(pid).unwrap_or_default();
        report.memory.push(Memory {
            name: name.to_owned(),
            // The kernel updates VmHWM lazily; a sample may have seen a little more.
            peak_kib: now.peak_kib.max(sampled_max_kib),
            sampled_max_kib,
            end_kib: now.current_kib,
        });
    }
    if let Some(ceiling) = ceiling_memory(&mut report) {
        report.memory.push(ceiling);
    }
    if let Some(r) = report.db_ceiling_memory.take() {
        report.memory.push(Memory {
            name: "database baseline handler".into(),
            peak_kib: r.peak_kib,
            sampled_max_kib: r.current_kib,
            end_kib: r.current_kib,
        });
    }
    report.print();
    println!("\nWhole run: {:.0} s", started.elapsed().as_secs_f64());
    Ok(report)
}

fn ceiling_memory(report: &mut Report) -> Option<Memory> {
    let r = report.ceiling_memory.take()?;
    Some(Memory {
        name: "trivial handler (ceiling)".into(),
        peak_kib: r.peak_kib,
        sampled_max_kib: r.current_kib,
        end_kib: r.current_kib,
    })
}

pub(super) fn heading(started: Instant, title: &str) {
    println!("\n[{:>5.1} s] {title}", started.elapsed().as_secs_f64());
}

/// Lets the system finish what the last measurement left behind before the next begins.
pub(super) async fn settle(bench: &Bench) -> anyhow::Result<()> {
    let system = &bench.system;
    let pools = [&system.products_db.pool, &system.orders_db.pool];
    let waited = pipeline::settle(pools, bench.drain_timeout()).await?;
    if waited > Duration::from_secs(2) {
        println!(
            "    (waited {:.0} s for the services to go quiet)",
            waited.as_secs_f64()
        );
    }
    Ok(())
}

/// Records where the CPU went since `before`, under `label`.
fn cpu_since(bench: &Bench, report: &mut Report, label: &str, before: &Snapshot) {
    let usage = cpu::between(before, &bench.cpu_snapshot());
    println!("    {}", usage.line());
    report.cpu.push((label.to_owned(), usage));
}

async fn phases(bench: &mut Bench, report: &mut Report, started: Instant) -> anyhow::Result<()> {
    let args = bench.args.clone();
    let clients = args.clients;
    if args.runs(Phase::Baseline) {
        heading(
            started,
            &format!("Baseline: raw INSERTs at {clients} concurrent connections"),
        );
        let (inserts, usage) = baseline::raw_inserts(bench).await?;
        println!("    {}", usage.line());
        report.baseline = Some(inserts);
        report.cpu.push(("raw INSERTs".to_owned(), usage));
    }
    if args.runs(Phase::Commands) {
        settle(bench).await?;
        heading(
            started,
            &format!("Commands: price changes from {clients} clients back to back"),
        );
        let before = bench.cpu_snapshot();
        let (prices, drain, burst) = commands::change_prices(bench).await?;
        println!("    burst: {}", burst.line());
        println!("{}", drain.line());
        report.cpu.push(("POST price, the burst".to_owned(), burst));
        cpu_since(bench, report, "POST price, burst and drain", &before);
        report.commands.push(prices);
        report.drains.push(drain);
    }
    if args.runs(Phase::ReadYourWrites) {
        settle(bench).await?;
        heading(
            started,
            &format!(
                "Read your writes: {} products created, each read back at once",
                read_your_writes::TRIES
            ),
        );
        let r = read_your_writes::measure(bench).await?;
        println!("  {}", r.line());
        report.read_your_writes = Some(r);
    }
    if args.runs(Phase::Propagation) {
        let rates = [args.light_rate, args.heavy_rate];
        for (n, rate) in rates.into_iter().enumerate() {
            settle(bench).await?;
            heading(
                started,
                &format!("Propagation: {} price changes at {rate}/s", args.samples),
            );
            let before = bench.cpu_snapshot();
            let p = propagation::price_changes(bench, rate, 100_000 * (n as i64 + 1)).await?;
            println!("{}", p.lines());
            cpu_since(
                bench,
                report,
                &format!("price changes at {rate}/s"),
                &before,
            );
            report.propagation.push(p);
        }
        for rate in rates {
            settle(bench).await?;
            heading(
                started,
                &format!("Propagation: {} orders at {rate}/s", args.samples),
            );
            let run = propagation::orders(bench, rate).await?;
            println!("{}", run.propagation.lines());
            println!("    {}", run.usage.line());
            report.cpu.push((format!("orders at {rate}/s"), run.usage));
            report.propagation.push(run.propagation);
        }
    }
    if args.runs(Phase::Capacity) {
        capacity::measure(bench, report, started).await?;
    }
    if args.runs(Phase::Reads) {
        settle(bench).await?;
        heading(
            started,
            &format!("Reads: {clients} connections back to back"),
        );
        let run = reads::reads(bench).await?;
        report.cpu.extend(run.usage);
        report.reads = run.reads;
        report.ceiling_memory = run.ceiling_memory;
        report.db_ceiling_memory = run.db_ceiling_memory;
        report.notes.extend(run.notes);
        if report.reads.iter().any(|r| r.db_baseline.is_some()) {
            report.db_baseline_pool = Some(args.pool_size);
        }
    }
    // Orders last: the saga drains a burst of them at its own (slow) pace, and nothing after
    // needs to wait for that. `--drain-orders` waits anyway and reports how long it took.
    if args.runs(Phase::Commands) {
        settle(bench).await?;
        heading(
            started,
            &format!("Commands: orders from {clients} clients back to back"),
        );
        let before = bench.cpu_snapshot();
        let (orders, drain, burst) = commands::place_orders(bench, args.drain_orders).await?;
        println!("    burst: {}", burst.line());
        report
            .cpu
            .push(("POST /orders, the burst".to_owned(), burst));
        if let Some(drain) = drain {
            println!("{}", drain.line());
            cpu_since(bench, report, "POST /orders, burst and drain", &before);
            report.drains.push(drain);
        }
        report.commands.push(orders);
    }
    Ok(())
}
