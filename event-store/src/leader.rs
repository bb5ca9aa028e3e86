//! Leader election among replicas of one service: the relay and each projector run in exactly
//! one process at a time, the one holding a Postgres session advisory lock keyed by the role.
//!
//! The lock lives exactly as long as the dedicated connection that took it. A leader writes its
//! checkpoints on that connection, so once the connection breaks (the lock is gone and another
//! replica may lead) nothing more is committed under the old leadership. When a leader dies,
//! Postgres ends its session and a waiting replica takes over within [`RETRY`].
//!
//! [`Leadership::lead`] is the one loop both run: wait for leadership, tail the store from the
//! checkpoint, hand each batch to the role's [`Work`], and on a failure back off and check that
//! the lock is still held before starting again from the checkpoint.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use crate::locks;
use crate::retry::{sleep_or_cancel, Backoff};
use crate::{EventStore, RecordedEvent, Tail};

/// How often a waiting replica asks for leadership again.
pub const RETRY: Duration = Duration::from_secs(1);
/// How often an idle leader checks that its lock connection (and so its lock) is still there.
pub const CHECK: Duration = Duration::from_secs(5);

/// The `application_name` of a leader's lock connection, so `pg_stat_activity` joined with
/// `pg_locks` shows which process leads which role.
pub fn application_name(role: &str) -> String {
    // Postgres keeps 63 bytes of it.
    let mut name = format!("leader {role} pid {}", std::process::id());
    name.truncate(63);
    name
}

/// The `application_name` of the session leading `role` in this database, if any leads it.
pub async fn holder<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    role: &str,
) -> Result<Option<String>, sqlx::Error> {
    locks::holder(executor, locks::leader(role)).await
}

/// What a leader does while it leads its role: the relay publishes, a projector applies.
/// [`Leadership::lead`] runs it batch by batch on the lock connection.
pub(crate) trait Work {
    /// The position to tail the store from (its checkpoint), read on the lock connection.
    async fn start(&mut self, conn: &mut PgConnection) -> anyhow::Result<i64>;

    /// When to be handed an empty batch if nothing new arrives meanwhile (`None`: never).
    fn idle_by(&self) -> Option<Instant> {
        None
    }

    /// The least time between two reads of the store while the leader keeps up
    /// ([`Tail::paced`]); zero reads as soon as woken.
    fn pace(&self) -> Duration {
        Duration::ZERO
    }

    /// Handles the next batch of the tail (empty once [`Work::idle_by`] passed), committing on
    /// `conn`, so that nothing is committed once the lock is gone. After an error the leader
    /// backs off, checks that it still leads and starts again from [`Work::start`].
    async fn handle(
        &mut self,
        conn: &mut PgConnection,
        batch: &[RecordedEvent],
    ) -> anyhow::Result<()>;

    /// On shutdown while leading, before leadership is given up: a last chance to store
    /// progress.
    async fn stop(&mut self, _conn: &mut PgConnection) {}
}

/// Leadership of one role, held through its own connection outside the pool.
pub struct Leadership {
    role: String,
    key: i64,
    conn: PgConnection,
}

impl Leadership {
    /// Runs `work` as the leader of `role` until `shutdown`: waits for leadership, then tails
    /// the store from [`Work::start`] in batches of `batch_size` and hands each to
    /// [`Work::handle`], on the lock connection. When the lock is lost it waits for leadership
    /// again; on shutdown it lets `work` [stop](Work::stop) and gives leadership up.
    pub(crate) async fn lead(
        store: &EventStore,
        role: &str,
        batch_size: i64,
        work: &mut impl Work,
        shutdown: &CancellationToken,
    ) {
        loop {
            let Some(mut leadership) = Leadership::acquire(store, role, shutdown).await else {
                return;
            };
            if leadership.work(store, batch_size, work, shutdown).await {
                work.stop(leadership.conn()).await;
                leadership.release().await;
                return;
            }
        }
    }

    /// [`Leadership::lead`] while the lock is held: `true` on shutdown, `false` when the lock
    /// was lost.
    async fn work(
        &mut self,
        store: &EventStore,
        batch_size: i64,
        work: &mut impl Work,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut backoff = Backoff::default();
        loop {
            if shutdown.is_cancelled() {
                return true;
            }
            let start = match work.start(&mut self.conn).await {
                Ok(position) => position,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "cannot load the checkpoint");
                    if !self.still_held_after(&mut backoff, shutdown).await {
                        return false;
                    }
                    continue;
                }
            };
            let mut tail = Tail::new(store.clone(), start, batch_size).paced(work.pace());
            loop {
                if shutdown.is_cancelled() {
                    return true;
                }
                let Some(batch) = self
                    .next_batch(&mut tail, work.idle_by(), &mut backoff, shutdown)
                    .await
                else {
                    return shutdown.is_cancelled();
                };
                if let Err(e) = work.handle(&mut self.conn, &batch).await {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "batch failed; retrying from the checkpoint"
                    );
                    if !self.still_held_after(&mut backoff, shutdown).await {
                        return false;
                    }
                    break;
                }
                backoff.reset();
            }
        }
    }

    /// Waits until this process leads `role` (or `shutdown`, giving `None`). Connection
    /// failures are retried with backoff.
    pub async fn acquire(
        store: &EventStore,
        role: &str,
        shutdown: &CancellationToken,
    ) -> Option<Leadership> {
        let key = locks::leader(role);
        let options: PgConnectOptions = store
            .pool()
            .connect_options()
            .as_ref()
            .clone()
            .application_name(&application_name(role));
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            let mut conn = match PgConnection::connect_with(&options).await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, role, "cannot connect to ask for leadership");
                    backoff.wait(shutdown).await;
                    continue;
                }
            };
            backoff.reset();
            loop {
                match locks::try_lock(&mut conn, key).await {
                    Ok(true) => {
                        tracing::info!(role, "gained leadership");
                        return Some(Leadership {
                            role: role.to_owned(),
                            key,
                            conn,
                        });
                    }
                    Ok(false) => {
                        sleep_or_cancel(RETRY, shutdown).await;
                        if shutdown.is_cancelled() {
                            let _ = conn.close().await;
                            return None;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, role, "cannot ask for leadership");
                        backoff.wait(shutdown).await;
                        break;
                    }
                }
            }
        }
        None
    }

    /// The lock connection: commits made on it are made only while the lock is held.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Whether the lock connection still works; a broken one means the lock is gone.
    pub async fn still_held(&mut self) -> bool {
        let alive = sqlx::query("SELECT 1")
            .execute(&mut self.conn)
            .await
            .is_ok();
        if !alive {
            tracing::warn!(role = %self.role, "lost leadership (its lock connection broke)");
        }
        alive
    }

    /// After a failure: waits out `backoff`, then reports whether the lock is still held.
    async fn still_held_after(
        &mut self,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> bool {
        backoff.wait(shutdown).await;
        self.still_held().await
    }

    /// The next batch of `tail` for the leader to handle, or `None` when it must stop leading
    /// (on `shutdown`, or because the lock is gone). An empty batch when `idle_by` passes
    /// with nothing new. While idle it checks every [`CHECK`] that the lock is still held;
    /// after a read error it backs off and retries.
    async fn next_batch(
        &mut self,
        tail: &mut Tail,
        idle_by: Option<Instant>,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> Option<Vec<RecordedEvent>> {
        loop {
            let next = tokio::select! {
                next = tail.next_batch_until(idle_by, shutdown) => next,
                _ = tokio::time::sleep(CHECK) => {
                    if !self.still_held().await {
                        return None;
                    }
                    continue;
                }
            };
            match next {
                Ok(Some(batch)) => return Some(batch),
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, role = %self.role, "cannot read the store; retrying");
                    if !self.still_held_after(backoff, shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Gives leadership up at once (on shutdown), so another replica need not wait for this
    /// session to end.
    pub async fn release(mut self) {
        locks::unlock(&mut self.conn, self.key).await;
        let _ = self.conn.close().await;
        tracing::info!(role = %self.role, "released leadership");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_names_fit_postgres() {
        assert!(application_name(&"x".repeat(100)).len() <= 63);
    }
}
