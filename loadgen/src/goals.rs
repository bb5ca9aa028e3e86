//! The goals a run is held to (those of the batch-pipeline issue, see BENCHMARKS.md), each
//! printed as met or missed beside its figure.

use std::time::Duration;

use super::report::{times, verdict, Propagation, Report};
use super::stats::{millis, ratio};

/// Orders per second the saga must hold with placed -> confirmed p99 under 100 ms.
pub const CAPACITY_GOAL: f64 = 1000.0;
/// The rate at which propagation latency is held to its bounds.
pub const PROPAGATION_GOAL_RATE: f64 = 500.0;
/// p50 and p99 bounds of a price change reaching order-service's catalogue.
pub const PRICE_GOAL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(50));
/// p50 and p99 bounds of an order's placed -> confirmed.
pub const ORDER_GOAL: (Duration, Duration) =
    (Duration::from_millis(20), Duration::from_millis(100));
/// Postgres CPU per order, both databases together, in milliseconds.
pub const POSTGRES_MS_PER_ORDER_GOAL: f64 = 2.0;
/// Commits per order across both databases (net of the load generator's own queries).
pub const COMMITS_PER_ORDER_GOAL: f64 = 8.0;
/// Commands per second as a fraction of raw INSERTs at the same concurrency.
pub const COMMANDS_GOAL: f64 = 0.5;
/// Reads per second as a fraction of the same SELECT behind a minimal handler.
pub const READS_GOAL: f64 = 0.8;

pub fn print(report: &Report) {
    println!("\nGoals");
    if let Some(capacity) = &report.capacity {
        let held = capacity.held();
        println!(
            "  [{}] saga capacity >= {CAPACITY_GOAL:.0} orders/s: {}",
            verdict(held.is_some_and(|rate| rate >= CAPACITY_GOAL)),
            held.map_or("none".to_owned(), |rate| format!("{rate:.0} orders/s"))
        );
    }
    let heavy = report
        .propagation
        .iter()
        .filter(|p| p.rate >= PROPAGATION_GOAL_RATE);
    for p in heavy {
        let is_order = p.name.starts_with("order");
        latency(p, if is_order { ORDER_GOAL } else { PRICE_GOAL });
        if let Some(costs) = p.costs.filter(|_| is_order) {
            let cpu = costs.postgres_ms_per_order();
            println!(
                "  [{}] Postgres CPU per order at {:.0}/s <= {POSTGRES_MS_PER_ORDER_GOAL} ms: {}",
                verdict(cpu.is_some_and(|ms| ms <= POSTGRES_MS_PER_ORDER_GOAL)),
                p.rate,
                cpu.map_or("n/a".to_owned(), |ms| format!("{ms:.2} ms"))
            );
            let commits = costs.net_commits_per_order();
            println!(
                "  [{}] commits per order at {:.0}/s <= {COMMITS_PER_ORDER_GOAL}: {}",
                verdict(commits.is_some_and(|c| c <= COMMITS_PER_ORDER_GOAL)),
                p.rate,
                commits.map_or("n/a".to_owned(), |c| format!("{c:.1} (net of the probe)"))
            );
        }
    }
    if let Some(b) = &report.baseline {
        for c in &report.commands {
            let x = ratio(c.per_second, b.per_second);
            println!(
                "  [{}] {} >= {COMMANDS_GOAL} x raw insert: {}",
                verdict(x.is_some_and(|x| x >= COMMANDS_GOAL)),
                c.name,
                times(x)
            );
        }
    }
    if let Some(r) = &report.read_your_writes {
        println!(
            "  [{}] GET /products/{{id}} right after its 201 answers the product: {} of {}",
            verdict(r.tries > 0 && r.current == r.tries),
            r.current,
            r.tries
        );
    }
    for r in &report.reads {
        let x = r
            .db_baseline
            .as_ref()
            .and_then(|db| ratio(r.service.per_second, db.per_second));
        println!(
            "  [{}] {} >= {READS_GOAL} x database baseline: {}",
            verdict(x.is_some_and(|x| x >= READS_GOAL)),
            r.service.name,
            times(x)
        );
    }
}

fn latency(p: &Propagation, (p50_goal, p99_goal): (Duration, Duration)) {
    let s = p.visible.summary();
    // No sample at all, or any lost, is no evidence of speed.
    let valid = s.count > 0 && s.errors == 0;
    for (label, figure, goal) in [("p50", s.p50, p50_goal), ("p99", s.p99, p99_goal)] {
        println!(
            "  [{}] {} at {:.0}/s: {label} {} < {}",
            verdict(valid && figure < goal),
            p.name,
            p.rate,
            millis(figure),
            millis(goal)
        );
    }
}
