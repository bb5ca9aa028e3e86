//! Rebuilds started over HTTP: run in the background, one per projection at a time, with their
//! progress kept in memory for `GET /admin/projections`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    rebuild_locked, rebuild_running, Options, Phase, Progress, RebuildError, RebuildLock, Source,
    Target,
};
use crate::metrics::LAG_EVENTS_CAP;
use crate::projection::checkpoint_name;
use crate::{checkpoint, EventStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RebuildState {
    pub fn as_str(self) -> &'static str {
        match self {
            RebuildState::Running => "running",
            RebuildState::Succeeded => "succeeded",
            RebuildState::Failed => "failed",
            RebuildState::Cancelled => "cancelled",
        }
    }
}

/// The last rebuild this process started for a projection.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildStatus {
    pub projection: String,
    pub state: RebuildState,
    /// While running.
    pub phase: Option<Phase>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub events_read: u64,
    pub events_total: u64,
    /// Once succeeded.
    pub rows_written: Option<u64>,
    pub seconds: Option<f64>,
    /// Once failed.
    pub error: Option<String>,
}

/// A projection as `GET /admin/projections` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    /// `events` (own events, from the store) or `inbox` (the other service's events).
    pub source: &'static str,
    pub tables: Vec<String>,
    /// Store projections: the checkpoint position. Inbox projections: the last inbox `seq`
    /// (their handler applies each event in the transaction that records it).
    pub checkpoint: i64,
    /// Events stored beyond the checkpoint, counted up to [`LAG_EVENTS_CAP`] (always 0 for
    /// inline and inbox projections).
    pub lag: i64,
    /// Whether a rebuild holds the projection's rebuild lock now, in any process.
    pub rebuild_running: bool,
    /// The last rebuild started by this process, if any.
    pub last_rebuild: Option<RebuildStatus>,
}

/// The rebuildable projections of a service and the rebuilds it runs in the background.
#[derive(Clone)]
pub struct Rebuilds {
    store: EventStore,
    targets: Arc<Vec<Target>>,
    options: Options,
    statuses: Arc<Mutex<HashMap<String, RebuildStatus>>>,
    tasks: TaskTracker,
    /// The runtime that created the registry: rebuilds started from an HTTP worker run there,
    /// not on the worker's own runtime, which stops with the HTTP server.
    runtime: Handle,
    shutdown: CancellationToken,
}

impl Rebuilds {
    /// Rebuilds started here stop (their shadow dropped, the live tables untouched) when
    /// `shutdown` is cancelled. Call from within the tokio runtime that should run them.
    pub fn new(store: EventStore, targets: Vec<Target>, shutdown: CancellationToken) -> Self {
        Rebuilds {
            store,
            targets: Arc::new(targets),
            options: Options::default(),
            statuses: Arc::default(),
            tasks: TaskTracker::new(),
            runtime: Handle::current(),
            shutdown: shutdown.child_token(),
        }
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Starts rebuilding `name` in the background and returns its first status. Fails at once
    /// when the name is unknown or a rebuild of it is running (here or in another process).
    pub async fn start(&self, name: &str) -> Result<RebuildStatus, RebuildError> {
        let target = self
            .targets
            .iter()
            .find(|t| t.name() == name)
            .cloned()
            .ok_or_else(|| RebuildError::Unknown(name.to_owned()))?;
        if self
            .status(name)
            .is_some_and(|s| s.state == RebuildState::Running)
        {
            return Err(RebuildError::InProgress(name.to_owned()));
        }
        let lock = RebuildLock::try_acquire(&self.store, name)
            .await?
            .ok_or_else(|| RebuildError::InProgress(name.to_owned()))?;
        let status = RebuildStatus {
            projection: name.to_owned(),
            state: RebuildState::Running,
            phase: Some(Phase::Building),
            started_at: Utc::now(),
            finished_at: None,
            events_read: 0,
            events_total: 0,
            rows_written: None,
            seconds: None,
            error: None,
        };
        self.set(status.clone());
        let (store, options, statuses, shutdown) = (
            self.store.clone(),
            self.options.clone(),
            self.statuses.clone(),
            self.shutdown.clone(),
        );
        let name = name.to_owned();
        tracing::info!(projection = %name, "rebuild started");
        let task = async move {
            let progress = |p: &Progress| {
                update(&statuses, &name, |s| {
                    s.phase = Some(p.phase);
                    s.events_read = p.events_read;
                    s.events_total = p.events_total;
                })
            };
            let result = rebuild_locked(&store, &target, &options, &progress, &shutdown).await;
            lock.release().await;
            match &result {
                Ok(r) => tracing::info!(
                    projection = %name,
                    events = r.events_read,
                    rows = r.rows_written,
                    seconds = r.elapsed.as_secs_f64(),
                    "rebuild committed"
                ),
                Err(e) => tracing::warn!(projection = %name, error = %e, "rebuild failed"),
            }
            update(&statuses, &name, |s| {
                s.phase = None;
                s.finished_at = Some(Utc::now());
                match result {
                    Ok(report) => {
                        s.state = RebuildState::Succeeded;
                        s.events_read = report.events_read;
                        s.rows_written = Some(report.rows_written);
                        s.seconds = Some(report.elapsed.as_secs_f64());
                    }
                    Err(RebuildError::Cancelled(_)) => s.state = RebuildState::Cancelled,
                    Err(e) => {
                        s.state = RebuildState::Failed;
                        s.error = Some(e.to_string());
                    }
                }
            });
        };
        self.tasks.spawn_on(task, &self.runtime);
        Ok(status)
    }

    /// The last rebuild of `name` started by this process.
    pub fn status(&self, name: &str) -> Option<RebuildStatus> {
        self.statuses.lock().ok()?.get(name).cloned()
    }

    /// Every projection with its checkpoint, lag and rebuild.
    pub async fn overview(&self) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
        let pool = self.store.pool();
        let mut all = Vec::with_capacity(self.targets.len());
        for target in self.targets.iter() {
            let (checkpoint, lag) = match target.source() {
                Source::Store(_) => {
                    let name = checkpoint_name(target.name());
                    let lag = checkpoint::lag(pool, &name, LAG_EVENTS_CAP).await?;
                    (lag.position, lag.events)
                }
                // Applied as events are appended: as far as the store.
                Source::Inline(_) => {
                    let head: i64 =
                        sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
                            .fetch_one(pool)
                            .await?;
                    (head, 0)
                }
                Source::Inbox(_) => {
                    let seq: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM inbox")
                        .fetch_one(pool)
                        .await?;
                    (seq, 0)
                }
            };
            all.push(ProjectionStatus {
                name: target.name().to_owned(),
                source: target.source_kind(),
                tables: target.tables().to_vec(),
                checkpoint,
                lag,
                rebuild_running: rebuild_running(pool, target.name()).await?,
                last_rebuild: self.status(target.name()),
            });
        }
        Ok(all)
    }

    /// Cancels running rebuilds and waits for them to drop their shadow tables.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn set(&self, status: RebuildStatus) {
        if let Ok(mut statuses) = self.statuses.lock() {
            statuses.insert(status.projection.clone(), status);
        }
    }
}

fn update(
    statuses: &Mutex<HashMap<String, RebuildStatus>>,
    name: &str,
    change: impl FnOnce(&mut RebuildStatus),
) {
    if let Ok(mut statuses) = statuses.lock() {
        if let Some(status) = statuses.get_mut(name) {
            change(status);
        }
    }
}
