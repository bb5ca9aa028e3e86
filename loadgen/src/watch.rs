//! The default propagation probe: one query every period over everything awaited, against the
//! read-model tables order-service serves its GETs from (no cache in between), so the moment a
//! row shows there is the moment `GET /catalog/products/{id}` or `GET /orders/{id}` serves it.
//! Its cost is one small query per period whatever the rate or the backlog, where per-request
//! HTTP polling would add thousands of GETs per second to the service being measured. It
//! queries on a connection of its own, whose backend the CPU figures set apart
//! ([`crate::cpu::POSTGRES_PROBE`]), so a per-order cost is the services' alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// Rows looked up per second at most: with a backlog of thousands awaited, the period stretches
/// (and the resolution with it, to a small fraction of latencies that are then seconds long)
/// so the probe's own load on Postgres stays bounded.
const MAX_LOOKUPS_PER_SECOND: f64 = 5_000.0;

/// Which read model to watch.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    Catalog,
    Orders,
}

impl Table {
    fn query(self) -> &'static str {
        match self {
            Table::Catalog => {
                "SELECT product_id, version, NULL::text FROM catalog_products \
                 WHERE product_id = ANY($1)"
            }
            Table::Orders => {
                "SELECT order_id, version, status FROM orders WHERE order_id = ANY($1)"
            }
        }
    }
}

/// A row as first seen at (or past) the version awaited.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub version: i64,
    pub status: Option<String>,
}

/// The error of a wait that ran out of time: the system was late, not wrong. The capacity
/// measurement counts these apart, as orders not confirmed within its drain deadline.
#[derive(Debug)]
pub struct NotVisible(pub String);

impl std::fmt::Display for NotVisible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotVisible {}

/// Whether `error` is (or wraps) a [`NotVisible`].
pub fn is_not_visible(error: &anyhow::Error) -> bool {
    error.is::<NotVisible>()
}

struct Waiter {
    min_version: i64,
    done: oneshot::Sender<Seen>,
}

type Waiting = Arc<Mutex<HashMap<Uuid, Vec<Waiter>>>>;

/// Watches one table until dropped.
pub struct Watcher {
    waiting: Waiting,
    queries: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Connects to the database at `url` and watches `table` every `period` on that one
    /// connection; returns the watcher and its backend's pid.
    pub async fn connect(
        url: &str,
        table: Table,
        period: Duration,
    ) -> anyhow::Result<(Watcher, u32)> {
        let mut conn = PgConnection::connect(url)
            .await
            .context("connecting the probe")?;
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .context("asking the probe's backend pid")?;
        let waiting: Waiting = Arc::default();
        let queries = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(watch(conn, table, period, waiting.clone(), queries.clone()));
        let watcher = Watcher {
            waiting,
            queries,
            task,
        };
        Ok((watcher, u32::try_from(backend).unwrap_or_default()))
    }

    /// Waits until the row `id` is at `min_version` or later, at most `give_up`.
    pub async fn wait(
        &self,
        id: Uuid,
        min_version: i64,
        give_up: Duration,
    ) -> anyhow::Result<Seen> {
        let (done, seen) = oneshot::channel();
        self.waiting
            .lock()
            .map_err(|_| anyhow::anyhow!("watcher poisoned"))?
            .entry(id)
            .or_default()
            .push(Waiter { min_version, done });
        match tokio::time::timeout(give_up, seen).await {
            Ok(Ok(seen)) => Ok(seen),
            Ok(Err(_)) => bail!("the watcher stopped"),
            Err(_) => {
                if let Ok(mut waiting) = self.waiting.lock() {
                    waiting.remove(&id);
                }
                Err(NotVisible(format!(
                    "{id} not at version {min_version} after {give_up:?}"
                ))
                .into())
            }
        }
    }

    /// Queries made so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(
    mut conn: PgConnection,
    table: Table,
    period: Duration,
    waiting: Waiting,
    queries: Arc<AtomicU64>,
) {
    let mut next = Instant::now();
    loop {
        let ids: Vec<Uuid> = match waiting.lock() {
            Ok(w) => w.keys().copied().collect(),
            Err(_) => return,
        };
        next += period_for(period, ids.len());
        if !ids.is_empty() {
            match look(&mut conn, table, &ids).await {
                Ok(rows) => resolve(&waiting, rows, Instant::now()),
                Err(e) => eprintln!("watcher query failed: {e:#}"),
            }
            queries.fetch_add(1, Ordering::Relaxed);
        }
        // A query that took longer than the period is followed by the next at once (a
        // timer wait would round up to tokio's 1 ms tick); never a burst to catch up.
        let now = Instant::now();
        if next <= now {
            next = now;
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep_until(next).await;
        }
    }
}

/// The period for `awaited` rows: `base`, stretched to keep under the lookup budget.
fn period_for(base: Duration, awaited: usize) -> Duration {
    base.max(Duration::from_secs_f64(
        awaited as f64 / MAX_LOOKUPS_PER_SECOND,
    ))
}

async fn look(
    conn: &mut PgConnection,
    table: Table,
    ids: &[Uuid],
) -> anyhow::Result<Vec<(Uuid, i64, Option<String>)>> {
    sqlx::query_as(table.query())
        .bind(ids)
        .fetch_all(conn)
        .await
        .context("watching the read model")
}

/// Hands each row to the waiters it satisfies.
fn resolve(waiting: &Waiting, rows: Vec<(Uuid, i64, Option<String>)>, at: Instant) {
    let Ok(mut waiting) = waiting.lock() else {
        return;
    };
    for (id, version, status) in rows {
        let Some(waiters) = waiting.remove(&id) else {
            continue;
        };
        let (ready, still): (Vec<Waiter>, Vec<Waiter>) =
            waiters.into_iter().partition(|w| version >= w.min_version);
        for w in ready {
            let _ = w.done.send(Seen {
                at,
                version,
                status: status.clone(),
            });
        }
        if !still.is_empty() {
            waiting.insert(id, still);
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn the_period_stretches_only_for_a_large_backlog() {
        let ms = Duration::from_millis(1);
        assert_eq!(period_for(ms, 0), ms);
        assert_eq!(period_for(ms, 5), ms);
        assert_eq!(period_for(ms, 5_000), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_runs_out_of_time_says_so_in_its_type() {
        let watcher = Watcher {
            waiting: Arc::default(),
            queries: Arc::default(),
            task: tokio::spawn(async {}),
        };
        let id = Uuid::new_v4();
        let error = watcher
            .wait(id, 2, Duration::from_millis(10))
            .await
            .unwrap_err();
        assert!(is_not_visible(&error), "{error:#}");
        assert!(!is_not_visible(&anyhow::anyhow!("boom")));
        assert!(
            watcher.waiting.lock().unwrap().is_empty(),
            "the waiter is gone"
        );
    }

    #[tokio::test]
    async fn a_row_releases_only_the_waiters_it_has_reached() {
        let waiting: Waiting = Arc::default();
        let id = Uuid::new_v4();
        let mut receivers = Vec::new();
        for min_version in [2, 3] {
            let (done, seen) = oneshot::channel();
            waiting
                .lock()
                .unwrap()
                .entry(id)
                .or_default()
                .push(Waiter { min_version, done });
            receivers.push(seen);
        }
        let at = Instant::now();

        resolve(&waiting, vec![(id, 2, Some("confirmed".into()))], at);

        let first = receivers.remove(0).await.unwrap();
        assert_eq!((first.at, first.version), (at, 2));
        assert_eq!(first.status.as_deref(), Some("confirmed"));
        assert_eq!(
            waiting.lock().unwrap()[&id].len(),
            1,
            "the version-3 waiter still waits"
        );
        resolve(&waiting, vec![(id, 3, None), (Uuid::new_v4(), 9, None)], at);
        assert_eq!(receivers.remove(0).await.unwrap().version, 3);
        assert!(waiting.lock().unwrap().is_empty());
    }
}
