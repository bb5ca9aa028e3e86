//! The other databases' long transactions. The event store hands an event to its readers (the
//! relay, the projectors) only once every transaction that was running when it was written has
//! ended: `pg_snapshot_xmin(pg_current_snapshot())`, the no-skip horizon of
//! docs/adr/0001-no-skip-positions.md. Transaction ids are cluster-wide, so a long writing
//! transaction in ANY database of the same Postgres server holds every relay back for as long
//! as it runs. On a server shared with other work that is the floor under propagation
//! latency, so the load generator watches for it and reports it beside the figures.
//!
//! The same samples say what the run's own backends were doing ([`Waits`]): on CPU, waiting
//! for the WAL to be flushed at a commit, waiting inside a transaction for the service to send
//! its next statement, or waiting for a lock. That is where a step's time goes when Postgres
//! is not out of CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;

const EVERY: Duration = Duration::from_millis(50);
/// A transaction open longer than this counts as holding the horizon back.
const LONG: Duration = Duration::from_millis(100);

/// The oldest writing transaction of another database, and what the run's backends (but the
/// watch's own and the probe's, `$2`) are doing, counted per [`Waits`] class.
const SAMPLE: &str = "SELECT coalesce(max(extract(epoch FROM now() - xact_start)) \
                              FILTER (WHERE backend_xid IS NOT NULL AND NOT datname = ANY($1)), \
                    0)::float8, \
           count(*) FILTER (WHERE mine AND state = 'active' AND wait_event IS NULL), \
           count(*) FILTER (WHERE mine AND wait_event IN ('WALSync', 'WALWrite', 'WALInsert', \
                                                         'WALBufMapping', 'WALInitSync')), \
           count(*) FILTER (WHERE mine AND state <> 'idle' AND wait_event = 'ClientRead'), \
           count(*) FILTER (WHERE mine AND wait_event_type = 'Lock'), \
           count(*) FILTER (WHERE mine AND state = 'active' AND wait_event_type <> 'Lock' \
                            AND wait_event NOT IN ('WALSync', 'WALWrite', 'WALInsert', \
                                                   'WALBufMapping', 'WALInitSync', 'ClientRead')) \
    FROM (SELECT *, coalesce(datname = ANY($1), false) AND backend_type = 'client backend' \
                 AND pid <> pg_backend_pid() AND pid <> ALL($2) AS mine \
          FROM pg_stat_activity) AS a";

/// Where the run's Postgres backends were, summed over the samples: divided by the samples,
/// how many were in each state at once on average.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Waits {
    /// Running a statement, not waiting on anything: on CPU (or runnable).
    pub cpu: f64,
    /// Waiting for the WAL to be written and flushed (a commit's, or another's it joins).
    pub wal: f64,
    /// Inside a transaction or a statement, waiting for the service's next message.
    pub service: f64,
    /// Waiting for a lock (the advisory locks of the inbox and the leaders included).
    pub lock: f64,
    /// Any other wait (buffer I/O, other lightweight locks).
    pub other: f64,
}

impl Waits {
    pub fn line(&self) -> String {
        format!(
            "the run's Postgres backends, on average at once: {:.2} on CPU, {:.2} waiting for \
             the WAL flush, {:.2} waiting for the service in a transaction, {:.2} for a lock, \
             {:.2} on other waits",
            self.cpu, self.wal, self.service, self.lock, self.other
        )
    }
}

/// What the watch saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Held {
    /// The longest-running writing transaction of another database seen.
    pub longest: Duration,
    /// The share of samples in which one had been running longer than 100 ms.
    pub share: f64,
    /// Queries the watch made (on product-service's database, where each is a commit).
    pub samples: u64,
    /// What the run's own backends were doing.
    pub waits: Waits,
}

impl Held {
    pub fn line(&self) -> String {
        format!(
            "other databases' writing transactions: longest {:.2} s; one older than {} ms open \
             {:.0} % of the time",
            self.longest.as_secs_f64(),
            LONG.as_millis(),
            self.share * 100.0
        ) + "\n    "
            + &self.waits.line()
    }
}

/// Samples the oldest writing transaction outside `databases` until stopped.
pub struct HorizonWatch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(u64, u64, f64, Waits)>,
}

impl HorizonWatch {
    /// Samples on `pool` (of one of `databases`, the run's), leaving out the backend `probe`.
    pub fn start(pool: PgPool, databases: Vec<String>, probe: Option<u32>) -> HorizonWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let excluded: Vec<i32> = probe
            .and_then(|pid| i32::try_from(pid).ok())
            .into_iter()
            .collect();
        let task = tokio::spawn(async move {
            let (mut samples, mut long, mut longest) = (0u64, 0u64, 0f64);
            let mut waits = Waits::default();
            while !flag.load(Ordering::Relaxed) {
                let sample: Result<(f64, i64, i64, i64, i64, i64), _> = sqlx::query_as(SAMPLE)
                    .bind(&databases)
                    .bind(&excluded)
                    .fetch_one(&pool)
                    .await;
                if let Ok((age, cpu, wal, service, lock, other)) = sample {
                    samples += 1;
                    long += u64::from(age > LONG.as_secs_f64());
                    longest = longest.max(age);
                    waits.cpu += cpu as f64;
                    waits.wal += wal as f64;
                    waits.service += service as f64;
                    waits.lock += lock as f64;
                    waits.other += other as f64;
                }
                tokio::time::sleep(EVERY).await;
            }
            (samples, long, longest, waits)
        });
        HorizonWatch { stop, task }
    }

    pub async fn finish(self) -> Held {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, long, longest, waits) =
            self.task.await.unwrap_or((0, 0, 0.0, Waits::default()));
        summarise(samples, long, longest, waits)
    }
}

fn summarise(samples: u64, long: u64, longest: f64, waits: Waits) -> Held {
    let per_sample = |total: f64| {
        if samples > 0 {
            total / samples as f64
        } else {
            0.0
        }
    };
    Held {
        longest: Duration::from_secs_f64(longest.max(0.0)),
        share: per_sample(long as f64),
        samples,
        waits: Waits {
            cpu: per_sample(waits.cpu),
            wal: per_sample(waits.wal),
            service: per_sample(waits.service),
            lock: per_sample(waits.lock),
            other: per_sample(waits.other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_gives_the_longest_and_the_share_of_long_samples() {
        let waits = Waits {
            cpu: 150.0,
            wal: 100.0,
            service: 250.0,
            lock: 0.0,
            other: 20.0,
        };
        let held = summarise(200, 50, 6.5, waits);
        assert_eq!(held.longest, Duration::from_millis(6500));
        assert_eq!(held.share, 0.25);
        assert_eq!(held.samples, 200);
        assert!(held.line().contains("longest 6.50 s"), "{}", held.line());
        assert!(
            held.line()
                .contains("0.75 on CPU, 0.50 waiting for the WAL flush, 1.25 waiting"),
            "{}",
            held.line()
        );
        assert_eq!(summarise(0, 0, 0.0, waits).share, 0.0);
        assert_eq!(summarise(0, 0, 0.0, waits).waits, Waits::default());
    }
}
