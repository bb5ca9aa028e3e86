//! Wakes tailers when events are appended: directly within this process, and through
//! Postgres LISTEN/NOTIFY across processes.
//!
//! Appends do not NOTIFY inside their own transaction: Postgres serialises the commits of
//! notifying transactions on one lock, which would cost the concurrency the position scheme
//! buys. Instead a background task sends one NOTIFY after a burst of local appends, at most
//! one per [`NOTIFY_EVERY`] (each is a transaction of its own), carrying this process's id so
//! that its own listener ignores it: local tailers were woken directly already. And only while
//! another process listens on the same database (a replica): a lone process would pay a
//! commit per NOTIFY that nobody hears. Listeners are recognised by their connection's
//! `application_name`, looked up at most once per [`LISTENERS_EVERY`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::retry::{sleep_or_cancel, Backoff};

pub(crate) const CHANNEL: &str = "es_events";
/// Least time between two NOTIFYs of one process: other processes' tailers (a replica leading
/// the relay) hear of a burst of appends at most this late.
const NOTIFY_EVERY: Duration = Duration::from_millis(5);
/// How often the notifier looks for other processes listening; a replica that starts listening
/// is told of appends at most this much later (its tailers poll meanwhile).
const LISTENERS_EVERY: Duration = Duration::from_secs(1);
/// `application_name` of every listener connection, followed by the process's id.
const LISTENER_NAME: &str = "es-listener ";

pub(crate) struct Wakeup {
    /// Tailers in this process wait on this.
    pub local: Notify,
    /// How many times `local` was notified: a tailer that saw the same count before its last
    /// read knows nothing was appended since, and waits without reading again.
    woken: AtomicU64,
    /// The notifier task waits on this to tell other processes.
    outbound: Notify,
    /// The payload of this process's NOTIFYs, so its own listener can tell them apart.
    id: String,
}

impl Default for Wakeup {
    fn default() -> Self {
        Wakeup {
            local: Notify::new(),
            woken: AtomicU64::new(0),
            outbound: Notify::new(),
            id: uuid::Uuid::new_v4().simple().to_string(),
        }
    }
}

impl Wakeup {
    /// Events were appended here: wakes local tailers, and other processes' (NOTIFY).
    pub fn appended(&self) {
        self.wake_local();
        self.outbound.notify_one();
    }

    /// Wakes this process's tailers (after an append here, or one announced by another
    /// process). The count goes up first, so a tailer that reads it after this call sees it.
    pub fn wake_local(&self) {
        self.woken.fetch_add(1, Ordering::SeqCst);
        self.local.notify_waiters();
    }

    /// The number of wake-ups so far. Read before a read of the store: if it is unchanged
    /// later, every append that could matter committed before that read began.
    pub fn woken(&self) -> u64 {
        self.woken.load(Ordering::SeqCst)
    }

    /// Foreign events were recorded here without appending anything: only other processes
    /// may care (a replica's consumer holding their successors parked).
    pub fn recorded(&self) {
        self.outbound.notify_one();
    }
}

impl crate::EventStore {
    /// Starts the tasks that carry append notifications between processes: one LISTENs and
    /// wakes local tailers, one NOTIFYs after local appends. Both stop on `shutdown`.
    pub fn spawn_notifier(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            tokio::join!(
                listen(store.pool().clone(), &store, shutdown.clone()),
                announce(store.pool().clone(), &store, shutdown),
            );
        })
    }
}

async fn listen(pool: PgPool, store: &crate::EventStore, shutdown: CancellationToken) {
    // A connection of its own, named so that other processes' notifiers can see it listens.
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .application_name(&format!("{LISTENER_NAME}{}", store.wakeup.id));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    let mut backoff = Backoff::default();
    while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "event listener cannot connect; retrying");
                backoff.wait(&shutdown).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            backoff.wait(&shutdown).await;
            continue;
        }
        backoff.reset();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(n)) if n.payload() == store.wakeup.id => {}
                    Ok(Some(_)) => store.wakeup.wake_local(),
                    // The connection dropped: wake tailers so they re-read, then reconnect.
                    Ok(None) => store.wakeup.wake_local(),
                    Err(e) => {
                        tracing::warn!(error = %e, "event listener failed; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

async fn announce(pool: PgPool, store: &crate::EventStore, shutdown: CancellationToken) {
    let mut others: Option<(bool, std::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = store.wakeup.outbound.notified() => {}
        }
        if others.is_none_or(|(_, at)| at.elapsed() >= LISTENERS_EVERY) {
            // When the lookup fails, notify anyway: a lost wake-up costs a replica a second.
            let found = other_listeners(&pool, &store.wakeup.id)
                .await
                .unwrap_or(true);
            others = Some((found, std::time::Instant::now()));
        }
        if others.is_some_and(|(found, _)| !found) {
            continue;
        }
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&store.wakeup.id)
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "NOTIFY failed; other processes fall back to polling");
        }
        // Appends meanwhile are announced by the next NOTIFY, after this pause.
        sleep_or_cancel(NOTIFY_EVERY, &shutdown).await;
    }
}

/// Whether a process other than the one with `id` listens on this database.
async fn other_listeners(pool: &PgPool, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                        WHERE datname = current_database() \
                          AND starts_with(application_name, $1) AND application_name <> $2)",
    )
    .bind(LISTENER_NAME)
    .bind(format!("{LISTENER_NAME}{id}"))
    .fetch_one(pool)
    .await
}
