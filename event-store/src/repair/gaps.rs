//! The gaps a consumer has noticed and not yet seen repaired: what to ask the producer for
//! each, when to ask (again), and how long each has been open. Shared with readiness, which
//! names a gap open for longer than its bound. Time is a parameter, so this is tested
//! without a clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{metrics, Request};

/// First wait before asking again for the same gap; it doubles up to [`ASK_AGAIN_MAX`].
const ASK_AGAIN: Duration = Duration::from_secs(2);
const ASK_AGAIN_MAX: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Gap {
    ask: Request,
    opened: Instant,
    /// Not before this: the first ask waits out a grace, later ones back off.
    next_ask: Instant,
    asks: u32,
}

/// Open gaps by key (`hole <stream>`, `watermark`). Cheap to clone: one shared book.
#[derive(Debug, Clone, Default)]
pub struct Gaps(Arc<Mutex<HashMap<String, Gap>>>);

impl Gaps {
    fn book(&self) -> MutexGuard<'_, HashMap<String, Gap>> {
        // A panic while holding the lock leaves a book that is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a gap to repair with `ask`, first asked for after `grace`; an open one keeps its
    /// age and schedule but takes the newer request. True when it was not open.
    pub(crate) fn open(&self, key: String, ask: Request, now: Instant, grace: Duration) -> bool {
        let mut book = self.book();
        let opened = match book.get_mut(&key) {
            Some(gap) => {
                gap.ask = ask;
                false
            }
            None => {
                book.insert(
                    key,
                    Gap {
                        ask,
                        opened: now,
                        next_ask: now + grace,
                        asks: 0,
                    },
                );
                true
            }
        };
        metrics::open_gaps(book.len());
        opened
    }

    /// Closes the gap `key` if open, giving how long it was open.
    pub(crate) fn close(&self, key: &str, now: Instant) -> Option<Duration> {
        let mut book = self.book();
        let gap = book.remove(key)?;
        metrics::open_gaps(book.len());
        let open = now.saturating_duration_since(gap.opened);
        metrics::repaired(open.as_secs_f64());
        Some(open)
    }

    /// Closes every hole gap of `stream` whose missing version is now recorded.
    pub(crate) fn recorded(&self, stream: &str, version: i64, now: Instant) {
        let key = hole_key(stream);
        let repaired = matches!(
            self.book().get(&key).map(|g| &g.ask),
            Some(Request::Stream { from_version, .. }) if *from_version <= version
        );
        if repaired {
            self.close(&key, now);
        }
    }

    /// The requests due now, each scheduled again with a doubling wait.
    pub(crate) fn due(&self, now: Instant) -> Vec<Request> {
        let mut book = self.book();
        let mut due = Vec::new();
        for gap in book.values_mut().filter(|g| g.next_ask <= now) {
            let wait = ASK_AGAIN
                .saturating_mul(1 << gap.asks.min(5))
                .min(ASK_AGAIN_MAX);
            gap.asks += 1;
            gap.next_ask = now + wait;
            due.push(gap.ask.clone());
        }
        due
    }

    /// Gaps open for longer than `age`, described for readiness.
    pub fn older_than(&self, age: Duration, now: Instant) -> Vec<String> {
        let mut old: Vec<String> = self
            .book()
            .iter()
            .filter(|(_, g)| now.saturating_duration_since(g.opened) > age)
            .map(|(key, g)| {
                format!(
                    "{key} ({:.0} s, asked {} times)",
                    now.saturating_duration_since(g.opened).as_secs_f64(),
                    g.asks
                )
            })
            .collect();
        old.sort();
        old
    }

    pub fn len(&self) -> usize {
        self.book().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) fn hole_key(stream: &str) -> String {
    format!("hole {stream}")
}

pub(crate) const WATERMARK_KEY: &str = "watermark";

#[cfg(test)]
mod tests {
    use super::*;

    fn hole(stream: &str, from_version: i64) -> Request {
        Request::Stream {
            stream_id: stream.into(),
            from_version,
        }
    }

    #[test]
    fn a_hole_is_asked_for_after_its_grace_then_less_and_less_often() {
        let (gaps, t0) = (Gaps::default(), Instant::now());
        let grace = Duration::from_secs(1);
        assert!(gaps.open(hole_key("p-1"), hole("p-1", 3), t0, grace));
        assert!(!gaps.open(hole_key("p-1"), hole("p-1", 3), t0, grace));
        assert!(gaps.due(t0).is_empty());
        assert_eq!(gaps.due(t0 + grace), vec![hole("p-1", 3)]);
        assert!(gaps.due(t0 + grace + Duration::from_secs(1)).is_empty());
        assert_eq!(gaps.due(t0 + grace + ASK_AGAIN).len(), 1);
        // The next wait is twice as long.
        assert!(gaps.due(t0 + grace + ASK_AGAIN * 2).is_empty());
        assert_eq!(gaps.due(t0 + grace + ASK_AGAIN * 3).len(), 1);
    }

    #[test]
    fn a_hole_closes_once_its_missing_version_is_recorded_and_not_before() {
        let (gaps, t0) = (Gaps::default(), Instant::now());
        gaps.open(hole_key("p-1"), hole("p-1", 3), t0, Duration::ZERO);
        gaps.recorded("p-1", 2, t0);
        gaps.recorded("p-2", 9, t0);
        assert_eq!(gaps.len(), 1);
        gaps.recorded("p-1", 3, t0);
        assert!(gaps.is_empty());
    }

    #[test]
    fn readiness_names_only_gaps_older_than_its_bound() {
        let (gaps, t0) = (Gaps::default(), Instant::now());
        gaps.open(hole_key("p-1"), hole("p-1", 3), t0, Duration::ZERO);
        let later = t0 + Duration::from_secs(5);
        gaps.open(WATERMARK_KEY.into(), hole("x", 1), later, Duration::ZERO);
        let old = gaps.older_than(Duration::from_secs(3), t0 + Duration::from_secs(6));
        assert_eq!(old, vec!["hole p-1 (6 s, asked 0 times)".to_owned()]);
        assert_eq!(
            gaps.close(WATERMARK_KEY, later + Duration::from_secs(2)),
            Some(Duration::from_secs(2))
        );
    }
}
