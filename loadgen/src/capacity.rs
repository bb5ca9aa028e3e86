//! The saga's capacity: the highest open-loop order rate at which placed -> confirmed still
//! holds. Where the propagation measurement offers two fixed rates and waits for whatever
//! backlog they build, this steps the rate up (`--capacity-rates`), each step for
//! `--capacity-seconds` of orders placed exactly as that measurement places them (its loop,
//! schedule, probe and products: [`propagation::order_loop`]), until a step fails.
//!
//! A step holds when the orders' placed -> confirmed p99 is under 100 ms, the backlog drained
//! (every order confirmed within 10 s of the last send being due; an order unanswered or
//! unconfirmed then is late and is not waited for), and nothing failed. The first step that
//! fails ends the phase: the next rate would only queue more, and the drain deadline bounds
//! every step at its sending time plus 10 s (plus the wait for Postgres' statistics). The
//! verdict is [`judge`], the result [`highest_held`]; both pure.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use super::bench::Bench;
use super::cpu::{Usage, POSTGRES_OURS};
use super::propagation::{self, OrderRun};
use super::report::{Propagation, Report};
use super::run::{heading, settle};
use super::schedule::Schedule;
use super::stats::millis;

/// A step holds only if placed -> confirmed stays under this at the 99th percentile.
pub const HOLD_P99: Duration = Duration::from_millis(100);
/// ... and every order is confirmed this long after the last send was due at the latest.
pub const DRAIN: Duration = Duration::from_secs(10);

/// What decides a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figures {
    /// Orders seen confirmed in time.
    pub confirmed: u64,
    /// Orders not confirmed (or not even answered) by the drain deadline.
    pub late: u64,
    /// Anything else that failed: a refused or failed `POST /orders`, an order not confirmed.
    pub errors: u64,
    /// Placed -> confirmed, over the confirmed orders.
    pub p99: Duration,
}

/// Whether a step held, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Held,
    Failed(Vec<String>),
}

impl Verdict {
    pub fn held(&self) -> bool {
        matches!(self, Verdict::Held)
    }
}

/// The verdict on a step's figures.
pub fn judge(f: Figures) -> Verdict {
    let mut why = Vec::new();
    if f.confirmed == 0 {
        why.push("no order confirmed".to_owned());
    }
    if f.p99 >= HOLD_P99 {
        why.push(format!("p99 {} >= {}", millis(f.p99), millis(HOLD_P99)));
    }
    if f.late > 0 {
        why.push(format!(
            "backlog not drained: {} orders not confirmed within {} s of the last send",
            f.late,
            DRAIN.as_secs()
        ));
    }
    if f.errors > 0 {
        why.push(format!("{} errors", f.errors));
    }
    if why.is_empty() {
        Verdict::Held
    } else {
        Verdict::Failed(why)
    }
}

/// The highest rate among the steps that held; `None` when none did.
pub fn highest_held<'a>(steps: impl IntoIterator<Item = (f64, &'a Verdict)>) -> Option<f64> {
    steps
        .into_iter()
        .filter(|(_, v)| v.held())
        .map(|(rate, _)| rate)
        .max_by(f64::total_cmp)
}

/// One step: its figures as a propagation measurement, and the verdict.
pub struct Step {
    pub propagation: Propagation,
    pub late: u64,
    /// From the last send being due until the last order was confirmed, when all were.
    pub drained_after: Option<Duration>,
    pub usage: Usage,
    pub verdict: Verdict,
}

impl Step {
    fn of(run: OrderRun) -> Step {
        let v = &run.propagation.visible;
        let figures = Figures {
            confirmed: v.count(),
            late: run.late,
            errors: v.errors().saturating_sub(run.late),
            p99: v.summary().p99,
        };
        Step {
            drained_after: (run.late == 0).then(|| run.took.saturating_sub(run.last_due)),
            verdict: judge(figures),
            late: run.late,
            usage: run.usage,
            propagation: run.propagation,
        }
    }

    fn rate(&self) -> f64 {
        self.propagation.rate
    }

    fn drained(&self) -> String {
        match self.drained_after {
            Some(after) => format!("yes, {:.1} s after the last send", after.as_secs_f64()),
            None => format!(
                "NO: {} orders not confirmed within {} s of the last send",
                self.late,
                DRAIN.as_secs()
            ),
        }
    }

    /// The step's line of the capacity table.
    fn cells(&self) -> [String; 17] {
        let p = &self.propagation;
        let (v, c) = (p.visible.summary(), p.command.summary());
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
        let num = |x: Option<f64>, decimals: usize| {
            x.map_or("n/a".to_owned(), |x| format!("{x:.decimals$}"))
        };
        let costs = p.costs;
        [
            format!("{:.0}/s", self.rate()),
            (v.count + v.errors).to_string(),
            v.count.to_string(),
            ms(v.p50),
            ms(v.p99),
            ms(v.max),
            ms(p.max_lag),
            ms(c.p50),
            ms(c.p99),
            if self.drained_after.is_some() {
                "yes"
            } else {
                "NO"
            }
            .to_owned(),
            v.errors.saturating_sub(self.late).to_string(),
            num(costs.and_then(|c| c.commits_per_order()), 1),
            num(costs.and_then(|c| c.net_commits_per_order()), 1),
            num(costs.and_then(|c| c.postgres_ms_per_order()), 2),
            num(costs.and_then(|c| c.probe_ms_per_order()), 2),
            format!("{:.2}", self.usage.cores(POSTGRES_OURS)),
            if self.verdict.held() {
                "held"
            } else {
                "FAILED"
            }
            .to_owned(),
        ]
    }

    fn verdict_line(&self) -> String {
        match &self.verdict {
            Verdict::Held => format!("{:.0}/s held", self.rate()),
            Verdict::Failed(why) => format!("{:.0}/s FAILED: {}", self.rate(), why.join("; ")),
        }
    }
}

/// The capacity table's columns.
const HEADER: [&str; 17] = [
    "rate",
    "sent",
    "confirmed",
    "p50 ms",
    "p99 ms",
    "max ms",
    "lag ms",
    "cmd p50",
    "cmd p99",
    "drained",
    "errors",
    "commits/order",
    "net",
    "pg ms/order",
    "probe ms",
    "pg cores",
    "verdict",
];
/// Their widths (the last one is left as long as it is).
const WIDTHS: [usize; 16] = [7, 6, 10, 8, 8, 8, 7, 8, 8, 8, 7, 14, 6, 12, 9, 9];

/// One line of the table, right-aligned under [`HEADER`].
fn row(cells: [String; 17]) -> String {
    let mut line = " ".to_owned();
    for (cell, width) in cells.iter().zip(WIDTHS) {
        let _ = write!(line, " {cell:>width$}");
    }
    line + "  " + &cells[HEADER.len() - 1] + "\n"
}

/// The whole phase.
pub struct Capacity {
    pub step_seconds: f64,
    pub steps: Vec<Step>,
    /// Rates not tried because an earlier step failed.
    pub untried: Vec<f64>,
}

impl Capacity {
    /// The highest step that held.
    pub fn held(&self) -> Option<f64> {
        highest_held(self.steps.iter().map(|s| (s.rate(), &s.verdict)))
    }

    pub fn result_line(&self) -> String {
        match self.held() {
            Some(rate) => format!(
                "saga capacity: {rate:.0} orders/s (the highest step with placed -> confirmed \
                 p99 < {} that drained)",
                millis(HOLD_P99)
            ),
            None => format!(
                "saga capacity: none of the {} steps tried held (p99 < {}, drained)",
                self.steps.len(),
                millis(HOLD_P99)
            ),
        }
    }

    /// The steps as a table, each failure's reasons, and the result.
    pub fn table(&self) -> String {
        let mut out = format!(
            "Capacity (orders open loop, {:.0} s a step; holds when placed -> confirmed p99 < {}, \
             all confirmed within {} s of the last send, no errors)\n",
            self.step_seconds,
            millis(HOLD_P99),
            DRAIN.as_secs()
        );
        out += &row(HEADER.map(str::to_owned));
        for step in &self.steps {
            out += &row(step.cells());
        }
        for step in self.steps.iter().filter(|s| !s.verdict.held()) {
            let _ = writeln!(out, "  {}", step.verdict_line());
        }
        if !self.untried.is_empty() {
            let rates: Vec<String> = self.untried.iter().map(|r| format!("{r:.0}/s")).collect();
            let _ = writeln!(out, "  not tried: {}", rates.join(", "));
        }
        out + "  " + &self.result_line()
    }
}

/// Runs the steps, each after the system has settled, until one fails; records them (and
/// their CPU) in `report` as they finish, so a run error keeps the steps before it.
pub async fn measure(
    bench: &mut Bench,
    report: &mut Report,
    started: Instant,
) -> anyhow::Result<()> {
    let rates = bench.args.capacity_rates();
    let step_length = bench.args.capacity_step();
    report.capacity = Some(Capacity {
        step_seconds: step_length.as_secs_f64(),
        steps: Vec::new(),
        untried: Vec::new(),
    });
    for (n, &rate) in rates.iter().enumerate() {
        settle(bench).await?;
        heading(
            started,
            &format!(
                "Capacity: orders at {rate}/s for {:.0} s (step {} of {})",
                step_length.as_secs_f64(),
                n + 1,
                rates.len()
            ),
        );
        let schedule = Schedule::for_duration(rate, step_length);
        let run = propagation::order_loop(bench, schedule, Some(DRAIN)).await?;
        let step = Step::of(run);
        println!("{}", step.propagation.lines());
        println!("    backlog drained: {}", step.drained());
        println!("    {}", step.usage.line());
        println!("    {}", step.verdict_line());
        report.cpu.push((
            format!("capacity step, orders at {rate}/s"),
            step.usage.clone(),
        ));
        let held = step.verdict.held();
        let capacity = report
            .capacity
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the capacity report went missing"))?;
        capacity.steps.push(step);
        if !held {
            capacity.untried = rates[n + 1..].to_vec();
            break;
        }
    }
    if let Some(capacity) = &report.capacity {
        println!("  {}", capacity.result_line());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
