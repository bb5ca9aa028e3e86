//! The other databases' long transactions. The event store hands an event to its readers (the
//! relay, the projectors) only once every transaction that was running when it was written has
//! ended: `pg_snapshot_xmin(pg_current_snapshot())`, the no-skip horizon of
//! docs/adr/0001-no-skip-positions.md. Transaction ids are cluster-wide, so a long writing
//! transaction in ANY database of the same Postgres server holds every relay back for as long
//! as it runs. On a server shared with other work that is the floor under propagation
//! latency, so the load generator watches for it and reports it beside the figures.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;

const EVERY: Duration = Duration::from_millis(50);
/// A transaction open longer than this counts as holding the horizon back.
const LONG: Duration = Duration::from_millis(100);

const OLDEST: &str = "SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0)::float8 \
    FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND NOT datname = ANY($1)";

/// What the watch saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Held {
    /// The longest-running writing transaction of another database seen.
    pub longest: Duration,
    /// The share of samples in which one had been running longer than 100 ms.
    pub share: f64,
    /// Queries the watch made (on product-service's database, where each is a commit).
    pub samples: u64,
}

impl Held {
    pub fn line(&self) -> String {
        format!(
            "other databases' writing transactions: longest {:.2} s; one older than {} ms open \
             {:.0} % of the time",
            self.longest.as_secs_f64(),
            LONG.as_millis(),
            self.share * 100.0
        )
    }
}

/// Samples the oldest writing transaction outside `databases` until stopped.
pub struct HorizonWatch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(u64, u64, f64)>,
}

impl HorizonWatch {
    pub fn start(pool: PgPool, databases: Vec<String>) -> HorizonWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut samples, mut long, mut longest) = (0u64, 0u64, 0f64);
            while !flag.load(Ordering::Relaxed) {
                let oldest: Result<f64, _> = sqlx::query_scalar(OLDEST)
                    .bind(&databases)
                    .fetch_one(&pool)
                    .await;
                if let Ok(age) = oldest {
                    samples += 1;
                    long += u64::from(age > LONG.as_secs_f64());
                    longest = longest.max(age);
                }
                tokio::time::sleep(EVERY).await;
            }
            (samples, long, longest)
        });
        HorizonWatch { stop, task }
    }

    pub async fn finish(self) -> Held {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, long, longest) = self.task.await.unwrap_or((0, 0, 0.0));
        summarise(samples, long, longest)
    }
}

fn summarise(samples: u64, long: u64, longest: f64) -> Held {
    Held {
        longest: Duration::from_secs_f64(longest.max(0.0)),
        share: if samples > 0 {
            long as f64 / samples as f64
        } else {
            0.0
        },
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_gives_the_longest_and_the_share_of_long_samples() {
        let held = summarise(200, 50, 6.5);
        assert_eq!(held.longest, Duration::from_millis(6500));
        assert_eq!(held.share, 0.25);
        assert_eq!(held.samples, 200);
        assert!(held.line().contains("longest 6.50 s"), "{}", held.line());
        assert_eq!(summarise(0, 0, 0.0).share, 0.0);
    }
}
