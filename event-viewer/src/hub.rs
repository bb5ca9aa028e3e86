//! What the viewer knows, shared by its watchers (NATS, metrics) and its HTTP handlers: the
//! window of events, the recent dead letters, each dependency's status. Every change is also
//! broadcast to the page's server-sent-events streams as `(event name, JSON)`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::cluster::ClusterView;
use crate::event::ViewedEvent;
use crate::prom::ServiceMetrics;
use crate::window::{Window, CAPACITY};

/// Dead letters kept for the page.
const DEAD_LETTERS_KEPT: usize = 100;

/// A message a service gave up on, as published on its dead-letter subject.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub subject: String,
    pub consumer: Option<String>,
    pub kind: Option<String>,
    pub error: Option<String>,
    pub time_ms: i64,
}

/// One service's health as the viewer last measured it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceStatus {
    /// Its `/metrics` answered at the last scrape.
    pub up: bool,
    pub error: Option<String>,
    pub metrics: ServiceMetrics,
    /// Messages of the other service its durable consumer has not yet acknowledged, as
    /// JetStream counts them (pending + awaiting ack); `None` when unknown.
    pub consumer_lag: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub nats_connected: bool,
    /// The NATS client's last error while not connected (e.g. an authorization violation).
    pub nats_error: Option<String>,
    pub services: BTreeMap<&'static str, ServiceStatus>,
    pub window_len: usize,
}

/// A change for the page: the SSE event name and its JSON data.
pub type Update = (&'static str, String);

pub struct Hub {
    window: Mutex<Window>,
    dead_letters: Mutex<VecDeque<DeadLetter>>,
    status: Mutex<Status>,
    cluster: Mutex<ClusterView>,
    updates: broadcast::Sender<Update>,
}

/// A poisoned lock only means another thread panicked mid-update; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(CAPACITY)
    }
}

impl Hub {
    pub fn new(capacity: usize) -> Hub {
        Hub {
            window: Mutex::new(Window::new(capacity)),
            dead_letters: Mutex::new(VecDeque::new()),
            status: Mutex::new(Status::default()),
            cluster: Mutex::new(ClusterView::default()),
            updates: broadcast::channel(4096).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    fn send(&self, name: &'static str, value: &impl Serialize) {
        if let Ok(json) = serde_json::to_string(value) {
            // No page open: nobody to tell.
            let _ = self.updates.send((name, json));
        }
    }

    pub fn add_event(&self, event: ViewedEvent) {
        let json = serde_json::to_string(&event);
        if lock(&self.window).insert(event) {
            if let Ok(json) = json {
                let _ = self.updates.send(("event", json));
            }
        }
    }

    pub fn add_dead_letter(&self, dead: DeadLetter) {
        self.send("deadletter", &dead);
        let mut kept = lock(&self.dead_letters);
        kept.push_front(dead);
        kept.truncate(DEAD_LETTERS_KEPT);
    }

    pub fn set_nats(&self, connected: bool) {
        {
            let mut status = lock(&self.status);
            status.nats_connected = connected;
            if connected {
                status.nats_error = None;
            }
        }
        self.publish_status();
    }

    pub fn set_nats_error(&self, error: String) {
        lock(&self.status).nats_error = Some(error);
    }

    pub fn update_service(&self, service: &'static str, f: impl FnOnce(&mut ServiceStatus)) {
        f(lock(&self.status).services.entry(service).or_default());
    }

    /// Sends the current status to every open page.
    pub fn publish_status(&self) {
        let status = self.status();
        self.send("status", &status);
    }

    pub fn status(&self) -> Status {
        let mut status = lock(&self.status).clone();
        status.window_len = lock(&self.window).len();
        status
    }

    /// Keeps the last view of the NATS cluster and sends it to every open page.
    pub fn set_cluster(&self, view: ClusterView) {
        self.send("cluster", &view);
        *lock(&self.cluster) = view;
    }

    pub fn cluster(&self) -> ClusterView {
        lock(&self.cluster).clone()
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.dead_letters).iter().cloned().collect()
    }

    /// Runs `f` on the window (read only), holding its lock as briefly as `f` takes.
    pub fn with_window<R>(&self, f: impl FnOnce(&Window) -> R) -> R {
        f(&lock(&self.window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::tests::event;

    #[test]
    fn only_new_events_are_broadcast() {
        let hub = Hub::new(10);
        let mut updates = hub.subscribe();
        hub.add_event(event("a", "orders", 1));
        hub.add_event(event("a", "orders", 1));
        let (name, json) = updates.try_recv().expect("one update");
        assert_eq!(name, "event");
        assert!(json.contains("\"event_id\":\"a\""), "{json}");
        assert!(updates.try_recv().is_err(), "the duplicate was broadcast");
        assert_eq!(hub.status().window_len, 1);
    }
}
