//! Rate control. An open loop sends at fixed instants whatever the responses do, so a slow
//! system cannot slow the sender down and hide its own latency (coordinated omission). A closed
//! loop keeps N clients busy back to back, for throughput.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// `count` sends at `rate` per second: send `i` is due `i / rate` seconds after the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub rate: f64,
    pub count: u64,
}

impl Schedule {
    /// As many sends as fit in `duration` at `rate`.
    pub fn for_duration(rate: f64, duration: Duration) -> Schedule {
        let count = (rate * duration.as_secs_f64()).floor().max(0.0) as u64;
        Schedule { rate, count }
    }

    /// Exactly `count` sends at `rate`.
    pub fn for_samples(rate: f64, count: u64) -> Schedule {
        Schedule { rate, count }
    }

    /// When send `i` is due, from the start. Computed from `i` (not by adding periods), so
    /// rounding never accumulates into drift.
    pub fn due(&self, i: u64) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How long the whole schedule takes to issue.
    pub fn duration(&self) -> Duration {
        self.due(self.count)
    }
}

/// What an open loop issued, and how well it kept to its schedule.
pub struct OpenLoopRun<T> {
    /// The tasks' outputs, in the order they were issued.
    pub outputs: Vec<T>,
    /// The latest any send left after its due instant (the sender's own lag).
    pub max_lag: Duration,
    /// From the first due instant to the last send.
    pub issued_in: Duration,
}

/// Runs `launch(i)` as a task of its own at each due instant of `schedule`, never waiting for
/// an earlier one to finish, then waits for them all. A send that is late (the sender was
/// starved of CPU) goes at once; `max_lag` tells how late the worst was.
pub async fn open_loop<F, Fut, T>(schedule: Schedule, mut launch: F) -> OpenLoopRun<T>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let start = Instant::now();
    let mut tasks: Vec<JoinHandle<T>> = Vec::with_capacity(schedule.count as usize);
    let mut max_lag = Duration::ZERO;
    for i in 0..schedule.count {
        let due = start + schedule.due(i);
        tokio::time::sleep_until(due).await;
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        tasks.push(tokio::spawn(launch(i)));
    }
    let issued_in = start.elapsed();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        // A panicking task is a bug in the load generator; its sample is simply missing.
        if let Ok(output) = task.await {
            outputs.push(output);
        }
    }
    OpenLoopRun {
        outputs,
        max_lag,
        issued_in,
    }
}

/// How a closed loop runs: `clients` back to back for `warmup` (not counted), then `measure`.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// Runs `clients` tasks, each calling `request(client, n)` back to back until the window ends.
/// Returns, per client, the requests started inside the measured window with their latencies.
pub async fn closed_loop<F, Fut, T>(plan: ClosedLoop, request: F) -> Vec<Vec<(Duration, T)>>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let measure_from = Instant::now() + plan.warmup;
    let end = measure_from + plan.measure;
    let tasks: Vec<JoinHandle<Vec<(Duration, T)>>> = (0..plan.clients)
        .map(|client| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut outputs = Vec::new();
                let mut n = 0;
                loop {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    let output = request(client, n).await;
                    n += 1;
                    if started >= measure_from {
                        outputs.push((started.elapsed(), output));
                    }
                }
                outputs
            })
        })
        .collect();
    let mut runs = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(run) = task.await {
            runs.push(run);
        }
    }
    runs
}

#[cfg(test)]
mod tests {

    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_rate_and_a_duration_give_the_count_and_the_due_times() {
        let s = Schedule::for_duration(500.0, Duration::from_secs(10));
        assert_eq!(s.count, 5000);
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_millis(2));
        assert_eq!(s.due(4999), Duration::from_millis(9998));
        assert_eq!(s.duration(), Duration::from_secs(10));
        assert_eq!(
            Schedule::for_duration(3.0, Duration::from_millis(999)).count,
            2
        );
        assert_eq!(Schedule::for_samples(0.0, 3).due(2), Duration::ZERO);
    }

    #[test]
    fn due_times_do_not_drift_over_a_long_schedule() {
        // 1/3 s is not representable; adding it up a million times would drift.
        let s = Schedule::for_samples(3.0, 3_000_000);
        assert_eq!(s.due(3_000_000), Duration::from_secs(1_000_000));
    }

    #[tokio::test(start_paused = true)]
    async fn the_open_loop_issues_every_send_at_its_due_instant() {
        let start = Instant::now();
        let schedule = Schedule::for_duration(500.0, Duration::from_secs(2));
        let run = open_loop(schedule, |i| async move { (i, start.elapsed()) }).await;

        assert_eq!(run.outputs.len(), 1000);
        for (n, (i, at)) in run.outputs.iter().enumerate() {
            assert_eq!(*i, n as u64);
            assert_eq!(*at, schedule.due(*i), "send {i}");
        }
        assert_eq!(run.max_lag, Duration::ZERO);
        assert_eq!(run.issued_in, Duration::from_millis(1998));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_responses_do_not_hold_back_the_open_loop() {
        let start = Instant::now();
        let issued = Arc::new(Mutex::new(Vec::new()));
        let schedule = Schedule::for_samples(100.0, 50);
        let log = issued.clone();
        let run = open_loop(schedule, move |i| {
            log.lock().unwrap().push(start.elapsed());
            async move {
                // Every response takes 3 s, far longer than the whole schedule.
                tokio::time::sleep(Duration::from_secs(3)).await;
                i
            }
        })
        .await;

        let issued = issued.lock().unwrap();
        assert_eq!(issued.len(), 50);
        assert_eq!(issued[49], Duration::from_millis(490));
        assert_eq!(run.issued_in, Duration::from_millis(490));
        assert_eq!(start.elapsed(), Duration::from_millis(3490));
        assert_eq!(run.outputs, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn the_closed_loop_counts_only_the_measured_window() {
        let plan = ClosedLoop {
            clients: 4,
            warmup: Duration::from_millis(100),
            measure: Duration::from_secs(1),
        };
        let runs = closed_loop(plan, |client, n| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            (client, n)
        })
        .await;

        assert_eq!(runs.len(), 4);
        for (client, run) in runs.iter().enumerate() {
            // 10 ms per request: 10 in the warmup, 100 in the measured second.
            assert_eq!(run.len(), 100, "client {client}");
            assert!(run.iter().all(|(latency, (c, _))| {
                *c == client && *latency == Duration::from_millis(10)
            }));
            assert_eq!(run[0].1 .1, 10);
        }
    }
}
