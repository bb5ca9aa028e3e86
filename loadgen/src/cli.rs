//! Command-line flags. The defaults make a full run of six to ten minutes, most of it in the
//! propagation and capacity measurements.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use super::ceiling::CeilingArgs;
use super::db_ceiling::DbCeilingArgs;

/// Measures the whole system: both services as release processes on fresh databases and a
/// NATS namespace of their own, against real Postgres and NATS, every figure beside a baseline
/// measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// (Internal) the trivial server the reads are compared with.
    #[command(hide = true)]
    Ceiling(CeilingArgs),
    /// (Internal) the minimal database-backed server the reads are compared with.
    #[command(hide = true)]
    DbCeiling(DbCeilingArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Concurrent clients (and connections) for throughput measurements.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds each throughput measurement lasts.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before each throughput measurement, not counted.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Price changes (or orders) per second for the light propagation measurement.
    #[arg(long, default_value_t = 100.0)]
    pub light_rate: f64,
    /// Price changes (or orders) per second for the heavy propagation measurement.
    #[arg(long, default_value_t = 500.0)]
    pub heavy_rate: f64,
    /// Samples in each propagation measurement.
    #[arg(long, default_value_t = 5000)]
    pub samples: u64,
    /// How the load generator sees a change arrive in order-service's read model.
    #[arg(long, value_enum, default_value_t = Probe::Table)]
    pub probe: Probe,
    /// Interval of the probe's queries (table) or GETs (http), in microseconds.
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_us: u64,
    /// Products whose prices the propagation measurement changes, in turn: enough that one
    /// product's next change comes long after its last (2 s at 500/s), so they never conflict.
    #[arg(long, default_value_t = 1024)]
    pub probe_products: usize,
    /// Products the orders are spread over.
    #[arg(long, default_value_t = 64)]
    pub order_products: usize,
    /// Which measurements to run.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [Phase::Baseline, Phase::Commands, Phase::ReadYourWrites,
                              Phase::Propagation, Phase::Capacity, Phase::Reads])]
    pub phases: Vec<Phase>,
    /// Open-loop order rates the capacity measurement steps through, lowest first; it stops
    /// after the first step that does not hold.
    #[arg(long, value_delimiter = ',', default_values_t = [100.0, 200.0, 500.0, 1000.0, 2000.0, 3000.0])]
    pub capacity_rates: Vec<f64>,
    /// Seconds each capacity step sends orders for.
    #[arg(long, default_value_t = 10.0)]
    pub capacity_seconds: f64,
    /// Connections in each service's pool, passed to both as `DATABASE_POOL_SIZE` (a service
    /// that does not read the variable keeps its own size), and the reads' database baseline's.
    #[arg(long, default_value_t = 20)]
    pub pool_size: u32,
    /// After the burst of orders, wait until the saga has confirmed them all (adds a minute or
    /// more: the saga is much slower than `POST /orders`).
    #[arg(long)]
    pub drain_orders: bool,
    /// Longest wait, in seconds, for a backlog to drain after a burst.
    #[arg(long, default_value_t = 300)]
    pub drain_timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Raw Postgres inserts, one event per transaction.
    Baseline,
    /// `POST /orders` and `POST /products/{id}/price` throughput.
    Commands,
    /// `GET /products/{id}` the moment its `POST /products` answered 201.
    ReadYourWrites,
    /// Price change to catalogue, and order to confirmed, at a light and a heavy rate.
    Propagation,
    /// Orders at rising open-loop rates until placed -> confirmed no longer holds.
    Capacity,
    /// `GET /orders/{id}`, `GET /catalog/products/{id}`, their database baseline and the
    /// trivial-handler ceiling.
    Reads,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Probe {
    /// One query every `--poll-interval-us` over all awaited rows of the read-model table the
    /// GETs read: resolution of that interval, at a cost independent of the rate.
    Table,
    /// Client-side GET polling of each awaited entity every `--poll-interval-us` (backing off
    /// to 5 % of the time waited): resolution of that interval, but adds load to the service.
    Http,
    /// One `?min_version=` request; the server polls every ~20 ms, so results are quantised.
    LongPoll,
}

impl RunArgs {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.1))
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.max(0.0))
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_micros(self.poll_interval_us.max(1))
    }

    pub fn runs(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    /// The capacity steps' rates, in the order they run.
    pub fn capacity_rates(&self) -> Vec<f64> {
        ascending(&self.capacity_rates)
    }

    pub fn capacity_step(&self) -> Duration {
        Duration::from_secs_f64(self.capacity_seconds.max(0.1))
    }
}

/// Positive rates, lowest first, each once: a capacity search steps up until one fails.
pub fn ascending(rates: &[f64]) -> Vec<f64> {
    let mut rates: Vec<f64> = rates
        .iter()
        .copied()
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    rates
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn capacity_rates_run_lowest_first_each_once() {
        assert_eq!(
            ascending(&[500.0, 100.0, 0.0, -5.0, 100.0, f64::NAN, 200.0]),
            vec![100.0, 200.0, 500.0]
        );
        assert!(ascending(&[]).is_empty());
    }

    #[test]
    fn the_defaults_run_every_phase_with_capacity_after_propagation() {
        let cli = Cli::try_parse_from(["loadgen"]).unwrap();
        let phases = &cli.run.phases;
        assert!(cli.command.is_none());
        let at = |p: Phase| phases.iter().position(|x| *x == p).unwrap();
        assert!(at(Phase::Capacity) > at(Phase::Propagation));
        assert!(phases.contains(&Phase::ReadYourWrites) && phases.contains(&Phase::Reads));
        assert_eq!(
            cli.run.capacity_rates(),
            vec![100.0, 200.0, 500.0, 1000.0, 2000.0, 3000.0]
        );
        assert_eq!(cli.run.capacity_step(), Duration::from_secs(10));
        assert_eq!(cli.run.pool_size, 20);
    }

    #[test]
    fn the_capacity_flags_parse() {
        let cli = Cli::try_parse_from([
            "loadgen",
            "--capacity-rates",
            "50,100",
            "--capacity-seconds",
            "3",
            "--pool-size",
            "10",
        ])
        .unwrap();
        assert_eq!(cli.run.capacity_rates(), vec![50.0, 100.0]);
        assert_eq!(cli.run.capacity_step(), Duration::from_secs(3));
        assert_eq!(cli.run.pool_size, 10);
    }
}
