//! Wakes tailers when events are appended: directly within this process, and through
//! Postgres LISTEN/NOTIFY across processes.
//!
//! Appends do not NOTIFY inside their own transaction: Postgres serialises the commits of
//! notifying transactions on one lock, which would cost the concurrency the position scheme
//! buys. Instead a background task sends one NOTIFY after a burst of local appends.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub(crate) const CHANNEL: &str = "es_events";

#[derive(Default)]
pub(crate) struct Wakeup {
    /// Tailers in this process wait on this.
    pub local: Notify,
    /// The notifier task waits on this to tell other processes.
    outbound: Notify,
}

impl Wakeup {
    pub fn appended(&self) {
        self.local.notify_waiters();
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
    while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "event listener cannot connect; retrying");
                sleep_or_cancel(Duration::from_secs(1), &shutdown).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            sleep_or_cancel(Duration::from_secs(1), &shutdown).await;
            continue;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(_)) => store.wakeup.local.notify_waiters(),
                    // The connection dropped: wake tailers so they re-read, then reconnect.
                    Ok(None) => store.wakeup.local.notify_waiters(),
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
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = store.wakeup.outbound.notified() => {}
        }
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "NOTIFY failed; other processes fall back to polling");
        }
    }
}

pub(crate) async fn sleep_or_cancel(duration: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}
