//! What one order costs the database, for the order propagation measurements and every capacity
//! step: the transactions committed in both services' databases per order placed, and the CPU
//! time of this run's Postgres backends per order. A rate says how fast the saga went on this
//! machine; these say how much work each order is, which is what a rewrite changes.
//!
//! Commits are Postgres' own count (`pg_stat_database.xact_commit`), read only once every
//! backend has flushed its statistics (see [`pipeline::STATS_FLUSHED_AFTER`]). Every query
//! counts, read-only ones included, so the load generator's own queries during the measurement
//! (the table probe's on order-service's database, or its GETs, which each cost one query
//! there; the horizon watch's on product-service's) are given apart: the raw figure and the
//! figure net of them. What the services do while idle (a tailer's fallback poll) is in both.
//! The CPU figure is the services' backends only: the table probe queries on a backend of its
//! own, whose CPU is given apart ([`POSTGRES_PROBE`]); a GET of the HTTP probes is
//! service work and stays in.

use std::time::Duration;

use tokio::time::Instant;

use super::bench::Bench;
use super::cpu::{Usage, POSTGRES_OURS, POSTGRES_PROBE};
use super::pipeline::{self, STATS_FLUSHED_AFTER};

/// The costs of one measurement's orders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Costs {
    /// Orders placed (acknowledged with 201).
    pub orders: u64,
    /// Transactions committed in both services' databases, from just before the first order
    /// until every backend had flushed its counts after the measurement.
    pub commits: i64,
    /// Of those, the load generator's own queries.
    pub own_queries: u64,
    /// CPU time of the Postgres backends serving this run's databases for the services
    /// during the measurement.
    pub postgres_cpu: Duration,
    /// CPU time of the table probe's backend, which is not in `postgres_cpu`.
    pub probe_cpu: Duration,
}

impl Costs {
    pub fn commits_per_order(&self) -> Option<f64> {
        self.per_order(self.commits as f64)
    }

    /// Commits per order less the load generator's own queries.
    pub fn net_commits_per_order(&self) -> Option<f64> {
        self.per_order(self.commits as f64 - self.own_queries as f64)
    }

    /// Postgres CPU per order, in milliseconds: the services' backends.
    pub fn postgres_ms_per_order(&self) -> Option<f64> {
        self.per_order(self.postgres_cpu.as_secs_f64() * 1e3)
    }

    /// The table probe's backend's CPU per order, in milliseconds (not in the figure above).
    pub fn probe_ms_per_order(&self) -> Option<f64> {
        self.per_order(self.probe_cpu.as_secs_f64() * 1e3)
    }

    fn per_order(&self, total: f64) -> Option<f64> {
        (self.orders > 0).then(|| total / self.orders as f64)
    }

    pub fn line(&self) -> String {
        let figure = |v: Option<f64>, decimals: usize| {
            v.map_or("n/a".to_owned(), |v| format!("{v:.decimals$}"))
        };
        format!(
            "per order ({} placed): {} commits across both databases ({} net of the load \
             generator's {} queries), Postgres CPU {} ms (the probe's backend {} ms more)",
            self.orders,
            figure(self.commits_per_order(), 1),
            figure(self.net_commits_per_order(), 1),
            self.own_queries,
            figure(self.postgres_ms_per_order(), 2),
            figure(self.probe_ms_per_order(), 2),
        )
    }
}

/// Waits until the statistics of a measurement that `ended` have been flushed, then reads both
/// databases' commit counts against `commits_before` (their sum before it), for `orders`
/// orders of which the load generator's own `own_queries` queries are to be told apart. The
/// Postgres CPU is taken from `usage`, the measurement's own.
pub async fn measure(
    bench: &Bench,
    commits_before: i64,
    ended: Instant,
    orders: u64,
    own_queries: u64,
    usage: &Usage,
) -> anyhow::Result<Costs> {
    tokio::time::sleep_until(ended + STATS_FLUSHED_AFTER).await;
    let system = &bench.system;
    let after = pipeline::commits(&system.products_db.pool).await?
        + pipeline::commits(&system.orders_db.pool).await?;
    Ok(Costs {
        orders,
        commits: after - commits_before,
        own_queries,
        postgres_cpu: usage.cpu_time(POSTGRES_OURS),
        probe_cpu: usage.cpu_time(POSTGRES_PROBE),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_per_order_placed_with_and_without_the_probe() {
        let costs = Costs {
            orders: 1_000,
            commits: 31_000,
            own_queries: 1_000,
            postgres_cpu: Duration::from_millis(2_500),
            probe_cpu: Duration::from_millis(900),
        };
        assert_eq!(costs.commits_per_order(), Some(31.0));
        assert_eq!(costs.net_commits_per_order(), Some(30.0));
        assert_eq!(costs.postgres_ms_per_order(), Some(2.5));
        let line = costs.line();
        assert!(
            line.contains("31.0 commits") && line.contains("30.0 net of the load generator's 1000"),
            "{line}"
        );
        assert!(
            line.contains("Postgres CPU 2.50 ms (the probe's backend 0.90 ms more)"),
            "{line}"
        );
    }

    #[test]
    fn no_order_placed_has_no_cost_per_order() {
        let costs = Costs {
            orders: 0,
            commits: 40,
            own_queries: 3,
            postgres_cpu: Duration::from_millis(10),
            probe_cpu: Duration::ZERO,
        };
        assert_eq!(costs.commits_per_order(), None);
        assert!(costs.line().contains("n/a commits"), "{}", costs.line());
    }
}
