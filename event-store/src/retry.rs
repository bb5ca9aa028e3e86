//! The one retry policy of the background machinery: after a failure of the database or the
//! broker, wait 100 ms, then twice as long after each further failure, up to 5 s; start over
//! after a success. Every wait ends early on shutdown.
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

/// Delays between attempts: [`START`] doubling up to [`MAX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(START)
    }
}

impl Backoff {
    /// The delay to wait now; the next one is twice as long (at most [`MAX`]).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.0;
        self.0 = (self.0 * 2).min(MAX);
        delay
    }

    /// Back to [`START`], after an attempt that succeeded.
    pub fn reset(&mut self) {
        self.0 = START;
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
}
