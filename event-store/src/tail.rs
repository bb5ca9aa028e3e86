//! A subscription over all events from a checkpoint: woken by appends, polling only as a
//! fallback, never skipping and never repeating an event.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::retry::Backoff;
use crate::{EventStore, RecordedEvent, StoreError};

/// How long a tailer sleeps when nothing wakes it.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// Events committed beyond the safe horizon are re-read soon: after this, then backing off
/// (doubling) up to [`HELD_BACK_MAX_WAIT`].
const HELD_BACK_FIRST_WAIT: Duration = Duration::from_micros(500);
/// Events committed beyond the safe horizon are re-read soon, backing off up to this. The
/// horizon is the server's, so the transaction holding it back may be another database's,
/// whose commit wakes nobody here: only re-reading finds out. A held-back read is a few
/// microseconds of index scan, and such waits last as long as one short transaction.
const HELD_BACK_MAX_WAIT: Duration = Duration::from_millis(4);

pub struct Tail {
    store: EventStore,
    after: i64,
    batch_size: i64,
    /// Set when the last read returned every committed event (not a full page, nothing held
    /// back): the wake-up count taken before that read, and when it was made. While the count
    /// is unchanged nothing was appended since, so the next call waits without reading. That
    /// saves the read that used to follow every batch and find nothing.
    caught_up: Option<(u64, Instant)>,
    /// The least time between two reads while the tail keeps up ([`Tail::paced`]).
    pace: Duration,
    /// No read before this: the last read returned less than a page, `pace` ago at most.
    not_before: Option<Instant>,
    reads: u64,
}

impl Tail {
    /// Follows the store from just after `after_position`.
    pub fn new(store: EventStore, after_position: i64, batch_size: i64) -> Self {
        Tail {
            store,
            after: after_position,
            batch_size: batch_size.max(1),
            caught_up: None,
            pace: Duration::ZERO,
            not_before: None,
            reads: 0,
        }
    }

    /// While it keeps up (its last read returned less than a page), reads at most once per
    /// `pace`, however often it is woken: the appends of that time come as one batch, at the
    /// cost of up to `pace` of latency. For a reader whose cost is per batch and whose readers
    /// can wait (an asynchronous projection). Zero, the default, reads as soon as woken.
    pub fn paced(mut self, pace: Duration) -> Self {
        self.pace = pace;
        self
    }

    /// The position of the last event handed out.
    pub fn position(&self) -> i64 {
        self.after
    }

    /// How many times this tail has read the store.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// The next events in position order, waiting until there is at least one; `None` once
    /// `shutdown` is cancelled.
    pub async fn next_batch(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Vec<RecordedEvent>>, StoreError> {
        self.next_batch_until(None, shutdown).await
    }

    /// Like [`Tail::next_batch`], but gives up waiting at `deadline` with an empty batch.
    /// Only waits are cut short, never a read, so no wake-up is lost.
    pub async fn next_batch_until(
        &mut self,
        deadline: Option<Instant>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Vec<RecordedEvent>>, StoreError> {
        let mut held_back = Backoff::new(HELD_BACK_FIRST_WAIT, HELD_BACK_MAX_WAIT);
        loop {
            // Register for wake-ups before reading the count, so an append that commits after
            // the count was read still wakes us.
            let notified = self.store.wakeup.local.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let woken = self.store.wakeup.woken();

            let since_caught_up = self
                .caught_up
                .filter(|(seen, _)| *seen == woken)
                .map(|(_, read_at)| read_at.elapsed());
            let paced = self
                .not_before
                .map(|at| at.saturating_duration_since(Instant::now()))
                .filter(|left| !left.is_zero());
            // While paced, wake-ups change nothing: the read waits for its time anyway.
            let mut woken_early = true;
            let mut wait = match (since_caught_up, paced) {
                (Some(elapsed), _) if elapsed < FALLBACK_POLL => FALLBACK_POLL - elapsed,
                // Something was appended, but the last read was too recent.
                (_, Some(left)) => {
                    woken_early = false;
                    left
                }
                _ => {
                    self.reads += 1;
                    let read_at = Instant::now();
                    let page = self.store.read_page(self.after, self.batch_size).await?;
                    let full = page.events.len() as i64 >= self.batch_size;
                    self.caught_up = (!page.held_back && !full).then_some((woken, read_at));
                    self.not_before = (!full && !self.pace.is_zero()).then(|| read_at + self.pace);
                    if let Some(last) = page.events.last() {
                        self.after = last.position;
                        return Ok(Some(page.events));
                    }
                    if page.held_back {
                        held_back.next_delay()
                    } else {
                        FALLBACK_POLL
                    }
                }
            };
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Some(Vec::new()));
                }
                wait = wait.min(left);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = &mut notified, if woken_early => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
