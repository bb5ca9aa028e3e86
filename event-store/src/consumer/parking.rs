//! Messages that arrived before their stream's predecessor, held (unacknowledged) until it is
//! recorded. Pure bookkeeping: the consumer says what time it is, so the rules are tested
//! without a server or a clock.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// One parked item and its times.
#[derive(Debug)]
pub(crate) struct Parked<M> {
    pub item: M,
    pub stream: String,
    pub version: i64,
    /// JetStream's stream sequence: a redelivered copy of a parked message has the same one.
    pub sequence: u64,
    pub parked_at: Instant,
    pub kept_alive: Instant,
}

/// Early items by stream, in version order (then sequence, for other copies of a version).
#[derive(Debug)]
pub(crate) struct Parking<M> {
    streams: HashMap<String, BTreeMap<(i64, u64), Parked<M>>>,
    count: usize,
    capacity: usize,
}

impl<M> Parking<M> {
    pub fn new(capacity: usize) -> Self {
        Parking {
            streams: HashMap::new(),
            count: 0,
            capacity,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn has_room(&self) -> bool {
        self.count < self.capacity
    }

    /// Parks `item`, waiting since `since` (now, or when it was first parked if it was taken
    /// out and is early still). A copy with the same sequence replaces the one parked.
    pub fn park(&mut self, stream: &str, version: i64, sequence: u64, item: M, since: Instant) {
        let parked = Parked {
            item,
            stream: stream.to_owned(),
            version,
            sequence,
            parked_at: since,
            kept_alive: since,
        };
        let messages = self.streams.entry(parked.stream.clone()).or_default();
        if messages
            .insert((parked.version, parked.sequence), parked)
            .is_none()
        {
            self.count += 1;
        }
    }

    /// Takes the items of `stream` that can go now that versions up to `recorded` are
    /// recorded: the contiguous run `recorded + 1, recorded + 2, …`, and every copy at or
    /// below `recorded` (duplicates, or conflicting claims to a recorded version), in version
    /// order.
    pub fn take_ready(&mut self, stream: &str, recorded: i64) -> Vec<Parked<M>> {
        let Some(messages) = self.streams.get_mut(stream) else {
            return Vec::new();
        };
        let mut next = recorded + 1;
        let mut ready = Vec::new();
        while let Some(entry) = messages.first_entry() {
            let version = entry.key().0;
            if version > next {
                break;
            }
            if version == next {
                next += 1;
            }
            ready.push(entry.remove());
        }
        if messages.is_empty() {
            self.streams.remove(stream);
        }
        self.count -= ready.len();
        ready
    }

    /// Takes the earliest item of every stream: worth trying again when another process may
    /// have recorded a predecessor.
    pub fn take_heads(&mut self) -> Vec<Parked<M>> {
        let mut heads = Vec::with_capacity(self.streams.len());
        for messages in self.streams.values_mut() {
            if let Some((_, head)) = messages.pop_first() {
                heads.push(head);
            }
        }
        self.streams.retain(|_, messages| !messages.is_empty());
        self.count -= heads.len();
        heads
    }

    /// Takes the items parked for `limit` or longer.
    pub fn take_expired(&mut self, now: Instant, limit: Duration) -> Vec<Parked<M>> {
        let mut expired = Vec::new();
        for messages in self.streams.values_mut() {
            let keys: Vec<(i64, u64)> = messages
                .iter()
                .filter(|(_, p)| now.duration_since(p.parked_at) >= limit)
                .map(|(k, _)| *k)
                .collect();
            expired.extend(keys.iter().filter_map(|k| messages.remove(k)));
        }
        self.streams.retain(|_, messages| !messages.is_empty());
        self.count -= expired.len();
        expired
    }

    /// The items not kept alive for `every` (so the server would soon redeliver them), marked
    /// as kept alive now: the caller tells the server it is still working on each.
    pub fn keep_alive(&mut self, now: Instant, every: Duration) -> Vec<&M> {
        let mut due = Vec::new();
        for parked in self.streams.values_mut().flat_map(|m| m.values_mut()) {
            if now.duration_since(parked.kept_alive) >= every {
                parked.kept_alive = now;
                due.push(&parked.item);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(taken: &[Parked<&str>]) -> Vec<i64> {
        taken.iter().map(|p| p.version).collect()
    }

    #[test]
    fn the_contiguous_run_after_the_recorded_version_is_ready_and_a_gap_stops_it() {
        let now = Instant::now();
        let mut parking = Parking::new(10);
        for (version, sequence) in [(5, 5), (3, 3), (4, 4), (7, 7)] {
            parking.park("s", version, sequence, "m", now);
        }
        assert_eq!(parking.len(), 4);
        assert!(parking.take_ready("s", 1).is_empty(), "2 is missing");
        assert_eq!(versions(&parking.take_ready("s", 2)), [3, 4, 5]);
        assert_eq!(parking.len(), 1);
        assert_eq!(versions(&parking.take_ready("s", 6)), [7]);
        assert!(parking.is_empty());
    }

    #[test]
    fn copies_at_or_below_the_recorded_version_come_out_with_the_run() {
        let now = Instant::now();
        let mut parking = Parking::new(10);
        parking.park("s", 2, 10, "late copy", now);
        parking.park("s", 4, 11, "next", now);
        parking.park("other", 9, 12, "other stream", now);
        let ready = parking.take_ready("s", 3);
        assert_eq!(versions(&ready), [2, 4]);
        assert_eq!(parking.len(), 1);
    }

    #[test]
    fn a_redelivered_copy_replaces_the_parked_one_and_does_not_count_twice() {
        let now = Instant::now();
        let mut parking = Parking::new(1);
        parking.park("s", 3, 7, "first", now);
        assert!(!parking.has_room());
        parking.park("s", 3, 7, "redelivered", now);
        assert_eq!(parking.len(), 1);
        assert_eq!(parking.take_ready("s", 2)[0].item, "redelivered");
    }

    #[test]
    fn heads_are_the_earliest_of_each_stream_and_parking_again_keeps_the_time() {
        let start = Instant::now();
        let mut parking = Parking::new(10);
        parking.park("a", 3, 1, "a3", start);
        parking.park("a", 5, 2, "a5", start);
        parking.park("b", 8, 3, "b8", start);
        let mut heads = parking.take_heads();
        heads.sort_by_key(|p| p.version);
        assert_eq!(versions(&heads), [3, 8]);
        assert_eq!(parking.len(), 1);
        for head in heads {
            parking.park(
                &head.stream,
                head.version,
                head.sequence,
                head.item,
                head.parked_at,
            );
        }
        let later = start + Duration::from_secs(31);
        let expired = parking.take_expired(later, Duration::from_secs(30));
        assert_eq!(expired.len(), 3, "items parked again kept their time");
        assert!(parking.is_empty());
    }

    #[test]
    fn only_items_parked_long_enough_expire() {
        let start = Instant::now();
        let mut parking = Parking::new(10);
        parking.park("a", 2, 1, "old", start);
        parking.park("a", 3, 2, "new", start + Duration::from_secs(20));
        let expired =
            parking.take_expired(start + Duration::from_secs(30), Duration::from_secs(30));
        assert_eq!(expired.iter().map(|p| p.item).collect::<Vec<_>>(), ["old"]);
        assert_eq!(parking.len(), 1);
    }

    #[test]
    fn items_are_kept_alive_once_per_period() {
        let start = Instant::now();
        let every = Duration::from_secs(1);
        let mut parking = Parking::new(10);
        parking.park("a", 2, 1, "x", start);
        assert!(parking.keep_alive(start, every).is_empty());
        assert_eq!(parking.keep_alive(start + every, every), [&"x"]);
        assert!(parking.keep_alive(start + every, every).is_empty());
    }
}
