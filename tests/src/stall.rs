//! How long each part of the event flow stood still while it had work: a meter that samples
//! both services' databases every [`SAMPLE`] and records, per part, the longest span in which
//! work was waiting and nothing moved. The parts are each service's relay (events stored beyond
//! its checkpoint; progress: the checkpoint) and each consumer (events its producer's relay has
//! published that its inbox lacks; progress: inbox rows), named by direction as the history
//! checker names them (`product->order` is order-service's consumer of product events).
//!
//! Read from the databases rather than the services' metrics, so the meter sees the same
//! thing whichever replica leads and whether or not a process answers its scrapes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::TestSystem;

/// How often the meter samples.
pub const SAMPLE: Duration = Duration::from_millis(100);

/// One part's longest stall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stall {
    /// `product relay`, `product->order`, ...
    pub part: &'static str,
    pub longest: Duration,
    /// When the longest stall began, from the origin given to [`StallMeter::start`].
    pub began: Duration,
}

impl Stall {
    /// `stall_ms_product_relay`, `stall_ms_product_to_order`: its key on a FAULT-SUMMARY line.
    pub fn key(&self) -> String {
        format!(
            "stall_ms_{}",
            self.part.replace("->", "_to_").replace(' ', "_")
        )
    }
}

/// The longest stall of one part, as samples come in.
#[derive(Debug, Clone)]
pub struct Tracker {
    stall: Stall,
    last_value: i64,
    /// When the part last moved or had nothing to do.
    still_since: Duration,
}

impl Tracker {
    pub fn new(part: &'static str) -> Tracker {
        Tracker {
            stall: Stall {
                part,
                ..Stall::default()
            },
            last_value: i64::MIN,
            still_since: Duration::ZERO,
        }
    }

    /// One sample at `at`: the part's progress `value`, and whether work was waiting. A stall
    /// runs from the last sample at which the part moved or was idle (an upper bound, to
    /// [`SAMPLE`]'s precision).
    pub fn sample(&mut self, at: Duration, value: i64, waiting: bool) {
        if !waiting || value != self.last_value {
            self.still_since = at;
            self.last_value = value;
            return;
        }
        let still = at.saturating_sub(self.still_since);
        if still > self.stall.longest {
            self.stall.longest = still;
            self.stall.began = self.still_since;
        }
    }

    pub fn stall(&self) -> &Stall {
        &self.stall
    }
}

/// A running meter; [`StallMeter::finish`] stops it and returns each part's longest stall.
pub struct StallMeter {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Stall>>,
}

/// What one service's database shows at a sample.
struct Side {
    /// The relay's checkpoint, and the highest position stored.
    relay: i64,
    head: i64,
    /// Events at or below the relay's checkpoint (published).
    published: i64,
    /// Rows in this service's inbox (events of the other service recorded).
    received: i64,
}

async fn side(pool: &PgPool) -> sqlx::Result<Side> {
    let (relay, head, published, received): (i64, i64, i64, i64) = sqlx::query_as(
        "WITH r AS (SELECT coalesce((SELECT position FROM checkpoints WHERE name = 'relay'), 0) \
                AS position) \
         SELECT r.position, \
                coalesce((SELECT max(position) FROM events), 0), \
                (SELECT count(*) FROM events WHERE position <= r.position), \
                (SELECT count(*) FROM inbox) \
         FROM r",
    )
    .fetch_one(pool)
    .await?;
    Ok(Side {
        relay,
        head,
        published,
        received,
    })
}

impl StallMeter {
    /// Starts sampling `system`'s databases; times are reported from `origin`.
    pub fn start(system: &TestSystem, origin: Instant) -> StallMeter {
        let products = system.products_db.pool.clone();
        let orders = system.orders_db.pool.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut trackers = [
                    Tracker::new("product relay"),
                    Tracker::new("order relay"),
                    Tracker::new("product->order"),
                    Tracker::new("order->product"),
                ];
                while !stop.load(Ordering::Relaxed) {
                    let at = origin.elapsed();
                    // A failed read (the pool busy, say) is a missed sample, not a stall.
                    if let (Ok(p), Ok(o)) = (side(&products).await, side(&orders).await) {
                        trackers[0].sample(at, p.relay, p.head > p.relay);
                        trackers[1].sample(at, o.relay, o.head > o.relay);
                        trackers[2].sample(at, o.received, p.published > o.received);
                        trackers[3].sample(at, p.received, o.published > p.received);
                    }
                    tokio::time::sleep(SAMPLE).await;
                }
                trackers.iter().map(|t| t.stall().clone()).collect()
            }
        });
        StallMeter { stop, task }
    }

    /// Stops the meter: each part's longest stall.
    pub async fn finish(self) -> Vec<Stall> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the stall meter")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_part_that_keeps_moving_or_has_nothing_to_do_never_stalls() {
        let mut tracker = Tracker::new("product->order");
        for (i, at) in (0..50).map(|i| (i, ms(i * 100))) {
            tracker.sample(at, i as i64, true);
        }
        for i in 50..100 {
            tracker.sample(ms(i * 100), 49, false);
        }
        assert_eq!(tracker.stall().longest, Duration::ZERO);
    }

    #[test]
    fn the_longest_span_with_work_waiting_and_no_progress_is_kept() {
        let mut tracker = Tracker::new("product relay");
        let samples = [
            (0, 1, true),
            (100, 1, true),
            (300, 1, true), // still for 300 ms
            (400, 2, true),
            (500, 2, false), // idle: not a stall
            (2_000, 2, false),
            (2_100, 2, true),
            (3_100, 2, true), // still for 1.1 s, from the last idle sample at 2 s
            (3_200, 3, true),
            (3_400, 3, true),
        ];
        for (at, value, waiting) in samples {
            tracker.sample(ms(at), value, waiting);
        }
        assert_eq!(tracker.stall().longest, ms(1_100));
        assert_eq!(tracker.stall().began, ms(2_000));
    }

    #[test]
    fn stalls_are_named_for_the_summary_line() {
        let stall = |part| Stall {
            part,
            ..Stall::default()
        };
        assert_eq!(stall("product relay").key(), "stall_ms_product_relay");
        assert_eq!(stall("product->order").key(), "stall_ms_product_to_order");
    }
}
