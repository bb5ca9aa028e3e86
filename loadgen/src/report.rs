//! The figures of a run and every ratio between them (the goals they are held to: [`super::goals`]).

use std::fmt::Display;
use std::time::Duration;

use super::memory::mebibytes;
use super::schedule::ClosedLoop;
use super::stats::{millis, per_second, ratio, Latencies};

/// A closed-loop measurement: requests per second and their latencies.
pub struct Throughput {
    pub name: String,
    pub per_second: f64,
    pub latency: Latencies,
}

impl Throughput {
    /// From the clients' outputs: the successful requests started in the measured window.
    pub fn from_runs<T, E: Display>(
        name: &str,
        plan: ClosedLoop,
        runs: &[Vec<(Duration, Result<T, E>)>],
    ) -> anyhow::Result<Throughput> {
        let mut latency = Latencies::new()?;
        for (took, result) in runs.iter().flatten() {
            match result {
                Ok(_) => latency.record(*took),
                Err(e) => latency.error(format!("{e:#}")),
            }
        }
        let throughput = Throughput {
            name: name.to_owned(),
            per_second: per_second(latency.count(), plan.measure),
            latency,
        };
        println!("{}", throughput.line());
        Ok(throughput)
    }

    /// What the requests were: `orders` or `price`.
    fn kind(&self) -> &str {
        if self.name.contains("orders") {
            "orders"
        } else {
            "price"
        }
    }

    pub fn line(&self) -> String {
        let s = self.latency.summary();
        format!(
            "  {:<38} {:>8.0} req/s   p50 {:>9}  p99 {:>9}  max {:>9}  errors {}",
            self.name,
            self.per_second,
            millis(s.p50),
            millis(s.p99),
            millis(s.max),
            s.errors
        )
    }
}

/// An open-loop propagation measurement.
pub struct Propagation {
    pub name: String,
    pub rate: f64,
    /// From the command's acknowledgement to order-service serving its effect.
    pub visible: Latencies,
    /// From sending the command to its acknowledgement.
    pub command: Latencies,
    /// How changes were seen, and the requests (queries or GETs) that took.
    pub probe: String,
    pub probe_requests: u64,
    /// From the first send until the last sample was seen.
    pub elapsed: Duration,
    /// How late the open loop sent its latest request (its own lag).
    pub max_lag: Duration,
    /// How fast each consumer went meanwhile.
    pub consumers: Vec<super::pipeline::ConsumerPace>,
    /// How long other databases' transactions held the relays back meanwhile.
    pub horizon: Option<super::horizon::Held>,
    /// Commands acknowledged (counted for orders only).
    pub acked: u64,
    /// What each order cost the databases (order measurements only).
    pub costs: Option<super::costs::Costs>,
}

impl Propagation {
    pub fn lines(&self) -> String {
        let v = self.visible.summary();
        let c = self.command.summary();
        format!(
            "  {} at {:.0}/s ({} sent, all seen after {:.1} s, sender lag max {})\n\
             \x20   visible after ack: p50 {}  p99 {}  max {}  mean {}  (n={}, errors {})\n\
             \x20   command itself:    p50 {}  p99 {}  max {}\n\
             \x20   probe: {}, {} requests ({:.0}/s)",
            self.name,
            self.rate,
            v.count + v.errors,
            self.elapsed.as_secs_f64(),
            millis(self.max_lag),
            millis(v.p50),
            millis(v.p99),
            millis(v.max),
            millis(v.mean),
            v.count,
            v.errors,
            millis(c.p50),
            millis(c.p99),
            millis(c.max),
            self.probe,
            self.probe_requests,
            per_second(self.probe_requests, self.elapsed),
        ) + &self
            .consumers
            .iter()
            .map(|c| format!("\n    {}", c.line()))
            .chain(self.horizon.iter().map(|h| format!("\n    {}", h.line())))
            .chain(self.costs.iter().map(|c| format!("\n    {}", c.line())))
            .collect::<String>()
    }
}

/// A read beside its database baseline (the same query behind a minimal handler; `None` when
/// it could not be measured) and its ceiling (no database at all).
pub struct Reads {
    pub service: Throughput,
    pub db_baseline: Option<Throughput>,
    pub ceiling: Throughput,
    pub body_bytes: usize,
}

impl Reads {
    /// The closed-loop measurements: the service, its database baseline, its ceiling.
    fn throughputs(&self) -> impl Iterator<Item = &Throughput> {
        [&self.service]
            .into_iter()
            .chain(&self.db_baseline)
            .chain([&self.ceiling])
    }
}

/// How long the system took to catch up with a burst of commands.
pub struct Drain {
    pub name: String,
    /// Commands in the burst, warmup included.
    pub count: u64,
    /// How long the burst lasted (warmup included).
    pub placed_for: Duration,
    /// From the burst's start until the last was visible.
    pub took: Duration,
}

impl Drain {
    pub fn line(&self) -> String {
        format!(
            "  {}: {} in {:.1} s, all visible after {:.1} s: {:.0}/s end to end",
            self.name,
            self.count,
            self.placed_for.as_secs_f64(),
            self.took.as_secs_f64(),
            per_second(self.count, self.took)
        )
    }
}

/// Peak resident size of a process.
pub struct Memory {
    pub name: String,
    pub peak_kib: u64,
    pub sampled_max_kib: u64,
    pub end_kib: u64,
}

#[derive(Default)]
pub struct Report {
    pub baseline: Option<Throughput>,
    pub commands: Vec<Throughput>,
    pub drains: Vec<Drain>,
    pub propagation: Vec<Propagation>,
    pub capacity: Option<super::capacity::Capacity>,
    pub read_your_writes: Option<super::read_your_writes::ReadYourWrites>,
    pub reads: Vec<Reads>,
    /// The reads' database baseline's pool size, when it ran.
    pub db_baseline_pool: Option<u32>,
    pub memory: Vec<Memory>,
    /// Where the CPU went, by measurement.
    pub cpu: Vec<(String, super::cpu::Usage)>,
    /// The ceiling server's resident size, taken before it stopped.
    pub ceiling_memory: Option<super::memory::Resident>,
    /// The database baseline server's, likewise.
    pub db_ceiling_memory: Option<super::memory::Resident>,
    /// What the reader should know about how figures were taken (printed, not errors).
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

pub(super) fn times(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |r| format!("{r:.2}x"))
}

pub(super) fn verdict(met: bool) -> &'static str {
    if met {
        "met   "
    } else {
        "MISSED"
    }
}

impl Report {
    pub fn print(&self) {
        println!("\n==================== SUMMARY ====================");
        if let Some(b) = &self.baseline {
            println!("\nBaseline\n{}", b.line());
        }
        if !self.commands.is_empty() {
            println!("\nCommand throughput");
            for c in &self.commands {
                println!("{}", c.line());
            }
            for d in &self.drains {
                println!("{}", d.line());
            }
        }
        if let Some(r) = &self.read_your_writes {
            println!("\nRead your writes\n  {}", r.line());
        }
        if !self.propagation.is_empty() {
            println!("\nPropagation");
            for p in &self.propagation {
                println!("{}", p.lines());
            }
        }
        if let Some(c) = &self.capacity {
            println!("\n{}", c.table());
        }
        if !self.reads.is_empty() {
            println!("\nRead throughput");
            if let Some(pool) = self.db_baseline_pool {
                println!("  (database baseline: the service's query behind a minimal handler, pool of {pool})");
            }
            for r in &self.reads {
                println!("{}", r.service.line());
                if let Some(db) = &r.db_baseline {
                    println!("{}", db.line());
                }
                println!("{}   ({} byte body)", r.ceiling.line(), r.body_bytes);
            }
        }
        if !self.memory.is_empty() {
            println!(
                "\nMemory (peak resident: the larger of the kernel's VmHWM and the 250 ms samples)"
            );
            for m in &self.memory {
                println!(
                    "  {:<38} peak {:>10}   sampled max {:>10}   end {:>10}",
                    m.name,
                    mebibytes(m.peak_kib),
                    mebibytes(m.sampled_max_kib),
                    mebibytes(m.end_kib)
                );
            }
        }
        if !self.cpu.is_empty() {
            println!("\nCPU, in cores used on average (2 = the whole machine)");
            for (label, usage) in &self.cpu {
                println!("  {label}:\n    {}", usage.line());
            }
        }
        self.print_ratios();
        super::goals::print(self);
        self.print_errors_and_notes();
    }

    fn print_ratios(&self) {
        println!("\nRatios");
        if let Some(b) = &self.baseline {
            for c in &self.commands {
                println!(
                    "  {:<38} / raw insert              = {}",
                    c.name,
                    times(ratio(c.per_second, b.per_second))
                );
            }
        }
        for r in &self.reads {
            if let Some(db) = &r.db_baseline {
                println!(
                    "  {:<38} / database baseline       = {}",
                    r.service.name,
                    times(ratio(r.service.per_second, db.per_second))
                );
            }
            println!(
                "  {:<38} / trivial handler         = {}",
                r.service.name,
                times(ratio(r.service.per_second, r.ceiling.per_second))
            );
        }
        for drain in &self.drains {
            let burst = self
                .commands
                .iter()
                .find(|c| drain.name.starts_with(c.kind()));
            if let Some(burst) = burst {
                println!(
                    "  {:<38} / {:<22}  = {}",
                    format!("{} (end to end)", drain.name),
                    burst.name,
                    times(ratio(per_second(drain.count, drain.took), burst.per_second))
                );
            }
        }
        for pair in self.propagation.chunks(2) {
            if let [light, heavy] = pair {
                let p99 = |p: &Propagation| p.visible.summary().p99.as_secs_f64();
                println!(
                    "  {:<38} p99 heavy / p99 light = {}",
                    heavy.name,
                    times(ratio(p99(heavy), p99(light)))
                );
            }
        }
    }

    fn print_errors_and_notes(&self) {
        let errors = self.invalidating_errors();
        println!(
            "  [{}] no errors in throughput measurements: {errors}",
            verdict(errors == 0)
        );
        let refused = self.error_count() - errors;
        if refused > 0 {
            println!("  [note  ] requests refused or lost under open-loop overload: {refused}");
        }
        for e in self.first_errors().take(5) {
            println!("         e.g. {e}");
        }
        for e in &self.errors {
            println!("         run error: {e}");
        }
        if !self.notes.is_empty() {
            println!("\nNotes");
            for n in &self.notes {
                println!("  {n}");
            }
        }
    }

    fn all_latencies(&self) -> impl Iterator<Item = &Latencies> {
        let throughputs = self
            .baseline
            .iter()
            .chain(&self.commands)
            .chain(self.reads.iter().flat_map(Reads::throughputs));
        let capacity = self.capacity.iter().flat_map(|c| &c.steps);
        throughputs.map(|t| &t.latency).chain(
            self.propagation
                .iter()
                .chain(capacity.map(|s| &s.propagation))
                .flat_map(|p| [&p.visible, &p.command]),
        )
    }

    /// Errors of the closed-loop measurements (and of the run itself): any one of them makes
    /// a throughput figure invalid. The open-loop propagation runs deliberately offer more than
    /// the system may take; what it refuses there is part of their figures, not a run error.
    pub fn invalidating_errors(&self) -> u64 {
        let throughputs = self
            .baseline
            .iter()
            .chain(&self.commands)
            .chain(self.reads.iter().flat_map(Reads::throughputs));
        throughputs.map(|t| t.latency.errors()).sum::<u64>() + self.errors.len() as u64
    }

    pub fn error_count(&self) -> u64 {
        self.all_latencies().map(Latencies::errors).sum::<u64>() + self.errors.len() as u64
    }

    fn first_errors(&self) -> impl Iterator<Item = &String> {
        self.all_latencies().flat_map(|l| l.first_errors())
    }
}
