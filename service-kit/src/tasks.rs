//! The background tasks of a service (store notifier, relay, consumer) under one policy:
//! started on one tracker, stopped by one token, given a bounded time to drain, and never
//! stopping silently: a task that panics is logged, named by readiness, and stops the
//! service, so that its supervisor starts it whole again instead of leaving it half alive
//! (serving reads that never advance).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long the background tasks get to finish their work in hand on shutdown. None loses
/// anything if cut short (checkpoints only advance after their effect), so a task stuck on
/// an unreachable NATS is not waited for forever.
pub const DRAIN: Duration = Duration::from_secs(15);

/// The names of the tasks that panicked.
#[derive(Debug, Clone, Default)]
pub struct Failures(Arc<Mutex<Vec<String>>>);

impl Failures {
    pub fn names(&self) -> Vec<String> {
        self.0.lock().map(|f| f.clone()).unwrap_or_default()
    }

    fn record(&self, name: &str) {
        if let Ok(mut failures) = self.0.lock() {
            failures.push(name.to_owned());
        }
    }
}

/// The service's background tasks.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    failures: Failures,
}

impl Tasks {
    /// Cancelling this token stops every task (and the service).
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub fn failures(&self) -> &Failures {
        &self.failures
    }

    /// Runs `task` until it ends. A panic is reported and stops the service.
    pub fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let (shutdown, failures) = (self.shutdown.clone(), self.failures.clone());
        self.tracker.spawn(async move {
            if std::panic::AssertUnwindSafe(task)
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!(
                    task = name,
                    "background task panicked; stopping the service"
                );
                failures.record(name);
                shutdown.cancel();
            }
        });
    }

    /// Stops every task and waits for them, at most [`DRAIN`].
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(DRAIN, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time; exiting anyway");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_named_and_stops_the_others() {
        let tasks = Tasks::default();
        let token = tasks.shutdown().clone();
        tasks.spawn("waits", async move { token.cancelled().await });
        tasks.spawn("relay", async { panic!("boom") });
        tokio::time::timeout(Duration::from_secs(5), tasks.shutdown().cancelled())
            .await
            .expect("the panic cancels the shutdown token");
        tasks.stop().await;
        assert_eq!(tasks.failures().names(), ["relay"]);
    }
}
