//! The bounded window of recent events: at most `capacity`, oldest dropped first, each event
//! id once, kept in time order whatever order they arrive in (two services' streams, and a
//! consumer recreated after a NATS restart, interleave arbitrarily).

use std::collections::{HashSet, VecDeque};

use crate::event::ViewedEvent;

/// How many events the viewer keeps.
pub const CAPACITY: usize = 10_000;

pub struct Window {
    capacity: usize,
    /// Ordered by [`order_key`], oldest first.
    events: VecDeque<ViewedEvent>,
    ids: HashSet<String>,
}

/// Time first; within one service the stream sequence breaks ties.
fn order_key(e: &ViewedEvent) -> (i64, &'static str, u64) {
    (e.time_ms, e.service, e.seq)
}

/// Which events a reader wants: a stream id and/or a correlation id, each matched as a
/// substring so a prefix pasted from the page is enough.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    pub stream: Option<String>,
    pub correlation: Option<String>,
}

impl Filter {
    pub fn matches(&self, e: &ViewedEvent) -> bool {
        let within = |needle: &Option<String>, hay: Option<&str>| match needle.as_deref() {
            None | Some("") => true,
            Some(needle) => hay.is_some_and(|hay| hay.contains(needle)),
        };
        within(&self.stream, Some(&e.stream_id))
            && within(&self.correlation, e.correlation_id.as_deref())
    }
}

impl Window {
    pub fn new(capacity: usize) -> Window {
        Window {
            capacity: capacity.max(1),
            events: VecDeque::new(),
            ids: HashSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Adds `event` in its place; `false` when its id is already in the window (a duplicate)
    /// or it is older than everything a full window holds.
    pub fn insert(&mut self, event: ViewedEvent) -> bool {
        if self.ids.contains(&event.event_id) {
            return false;
        }
        let at = self
            .events
            .partition_point(|e| order_key(e) <= order_key(&event));
        if at == 0 && self.events.len() >= self.capacity {
            return false;
        }
        self.ids.insert(event.event_id.clone());
        self.events.insert(at, event);
        while self.events.len() > self.capacity {
            if let Some(old) = self.events.pop_front() {
                self.ids.remove(&old.event_id);
            }
        }
        true
    }

    /// Up to `limit` events matching `filter`, newest first.
    pub fn newest(&self, filter: &Filter, limit: usize) -> Vec<&ViewedEvent> {
        self.events
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .take(limit)
            .collect()
    }

    /// Every event, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &ViewedEvent> {
        self.events.iter()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn event(id: &str, service: &'static str, time_ms: i64) -> ViewedEvent {
        ViewedEvent {
            service,
            seq: time_ms as u64,
            event_id: id.to_owned(),
            republished: None,
            event_type: "OrderPlaced".to_owned(),
            stream_id: format!("order-{id}"),
            stream_version: 1,
            position: time_ms,
            correlation_id: Some(format!("corr-{id}")),
            time_ms,
            order_id: None,
            payload: serde_json::Value::Null,
            malformed: None,
        }
    }

    fn ids(window: &Window) -> Vec<&str> {
        window.iter().map(|e| e.event_id.as_str()).collect()
    }

    #[test]
    fn events_arriving_out_of_order_are_kept_in_time_order() {
        let mut window = Window::new(10);
        for (id, t) in [("c", 30), ("a", 10), ("d", 40), ("b", 20)] {
            assert!(window.insert(event(id, "orders", t)));
        }
        assert_eq!(ids(&window), ["a", "b", "c", "d"]);
        let newest: Vec<_> = window
            .newest(&Filter::default(), 2)
            .iter()
            .map(|e| e.event_id.as_str())
            .collect();
        assert_eq!(newest, ["d", "c"]);
    }

    #[test]
    fn the_same_event_id_twice_is_kept_once() {
        let mut window = Window::new(10);
        assert!(window.insert(event("a", "orders", 10)));
        assert!(!window.insert(event("a", "orders", 99)));
        assert_eq!(window.len(), 1);
    }

    #[test]
    fn a_full_window_drops_its_oldest_and_forgets_their_ids() {
        let mut window = Window::new(3);
        for (id, t) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
            window.insert(event(id, "products", t));
        }
        assert_eq!(ids(&window), ["b", "c", "d"]);
        // Older than everything in a full window: not kept.
        assert!(!window.insert(event("z", "products", 0)));
        // "a" was dropped, so its id is free again; it is still too old to be kept.
        assert!(!window.insert(event("a", "products", 1)));
        assert!(window.insert(event("e", "products", 5)));
        assert_eq!(ids(&window), ["c", "d", "e"]);
    }

    #[test]
    fn filters_match_stream_and_correlation_ids_by_substring() {
        let mut window = Window::new(10);
        window.insert(event("ab", "orders", 1));
        window.insert(event("cd", "products", 2));
        let only = |f: Filter| -> Vec<String> {
            window
                .newest(&f, 10)
                .iter()
                .map(|e| e.event_id.clone())
                .collect()
        };
        assert_eq!(
            only(Filter {
                stream: Some("der-a".into()),
                correlation: None
            }),
            ["ab"]
        );
        assert_eq!(
            only(Filter {
                stream: None,
                correlation: Some("corr-cd".into())
            }),
            ["cd"]
        );
        assert_eq!(only(Filter::default()), ["cd", "ab"]);
        assert!(only(Filter {
            stream: Some("nope".into()),
            correlation: None
        })
        .is_empty());
    }
}
