//! The one retry policy of the background machinery: after a failure of the database or the
//! broker, wait 100 ms, then twice as long after each further failure, up to 5 s; start over
//! after a success. Every wait ends early on shutdown.
//!
//! Two other waits live here too, so that no loop writes its own: a doubling wait with other
//! bounds ([`Backoff::new`], for a tailer re-reading events held back by a transaction in
//! flight), and `race_pause`, the short jittered pause after losing a race to a concurrent
//! writer (nothing failed; the same work is simply tried again on fresh state).
//!
//! Hand-written rather than a crate such as `backon`: the loops here do not retry one future
//! (they keep state between attempts, check leadership in between, and reset after progress),
//! so a delay sequence that can be awaited against a cancellation token is all they share.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The first wait after a failure.
pub const START: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
pub const MAX: Duration = Duration::from_secs(5);

/// Delays between attempts: [`START`] doubling up to [`MAX`] (by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
    start: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(START, MAX)
    }
}

impl Backoff {
    /// Delays from `start` doubling up to `max`.
    pub fn new(start: Duration, max: Duration) -> Self {
        Backoff {
            next: start,
            start,
            max,
        }
    }

    /// The delay to wait now; the next one is twice as long (at most the maximum).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the first delay, after an attempt that succeeded.
    pub fn reset(&mut self) {
        self.next = self.start;
    }

    /// Waits out the next delay, or less when `shutdown` is cancelled meanwhile.
    pub async fn wait(&mut self, shutdown: &CancellationToken) {
        sleep_or_cancel(self.next_delay(), shutdown).await;
    }
}

/// Sleeps for `duration`, or until `shutdown` is cancelled.
pub async fn sleep_or_cancel(duration: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

/// Attempts after which a [`race_pause`] stops growing.
const RACE_STEPS_MAX: u32 = 10;

/// The pause before retry number `attempt` (from 1) after losing a race to a concurrent
/// writer: `step` per attempt (growing for [`RACE_STEPS_MAX`] attempts), plus `jitter_of`
/// (any number, such as the clock's nanoseconds) folded below `jitter`, so that two writers
/// racing on one stream stop colliding in lockstep.
fn race_delay(attempt: u32, step: Duration, jitter: Duration, jitter_of: u64) -> Duration {
    let jitter_micros = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX).max(1);
    step * attempt.min(RACE_STEPS_MAX) + Duration::from_micros(jitter_of % jitter_micros)
}

/// Sleeps for a short, growing, jittered pause before retry number `attempt` (from 1) of
/// work that lost a race to a concurrent writer; see [`race_delay`]'s bounds.
pub(crate) async fn race_pause(attempt: u32, step: Duration, jitter: Duration) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    tokio::time::sleep(race_delay(attempt, step, jitter, nanos)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_reset_starts_over() {
        let mut backoff = Backoff::default();
        let delays: Vec<u128> = (0..8).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), START);
    }

    #[test]
    fn other_bounds_double_the_same_way() {
        let mut backoff = Backoff::new(Duration::from_micros(500), Duration::from_millis(4));
        let delays: Vec<u128> = (0..6).map(|_| backoff.next_delay().as_micros()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 4000, 4000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_micros(500));
    }

    #[test]
    fn race_pauses_grow_for_ten_attempts_and_jitter_below_the_bound() {
        let (step, jitter) = (Duration::from_micros(200), Duration::from_micros(1000));
        let micros = |attempt, of| race_delay(attempt, step, jitter, of).as_micros();
        assert_eq!(micros(1, 0), 200);
        assert_eq!(micros(3, 0), 600);
        assert_eq!(micros(10, 0), 2000);
        assert_eq!(micros(31, 0), 2000);
        assert_eq!(micros(1, 2_999), 200 + 999);
    }
}
