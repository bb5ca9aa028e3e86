//! The relay against real NATS JetStream: every stored event is published once, across relay
//! crashes and a NATS outage.
// Its helpers unwrap too, and clippy.toml's allow-unwrap-in-tests covers test functions only.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use event_store::testing::{self, NatsServer, TestDb};
use event_store::{checkpoint, leader, EventStore, ExpectedVersion, NewEvent, Relay, RelayConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct RunningRelay {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRelay {
    fn start(store: &EventStore, js: &jetstream::Context, config: &RelayConfig) -> Self {
        let shutdown = CancellationToken::new();
        let relay = Relay::new(store.clone(), js.clone(), config.clone());
        let task = tokio::spawn(relay.run(shutdown.clone()));
        RunningRelay { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }

    /// Kills the relay wherever it is, as a crash would.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn unique_config() -> RelayConfig {
    let ns = testing::unique("relay");
    RelayConfig::new(format!("{ns}_events"), format!("{ns}.events"))
}

async fn append_events(store: &EventStore, streams: usize, per_stream: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for s in 0..streams {
        let stream = format!("item-{}", Uuid::new_v4());
        for i in 0..per_stream {
            let event = NewEvent::new("ItemCounted", json!({ "i": i }));
            ids.push(event.event_id);
            store
                .append(&stream, ExpectedVersion::Exact(i as i64), &[event])
                .await
                .unwrap();
        }
        let _ = s;
    }
    ids
}

/// Waits until the JetStream stream holds `count` messages (a liveness bound, not a benchmark).
async fn wait_for_messages(js: &jetstream::Context, stream: &str, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let messages = match js.get_stream(stream).await {
            Ok(s) => s.get_info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        if messages >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stream {stream} holds {messages} of {count} messages"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message's `Nats-Msg-Id`, in stream order.
async fn published_ids(js: &jetstream::Context, stream: &str) -> Vec<Uuid> {
    let stream = js.get_stream(stream).await.unwrap();
    let count = stream.get_info().await.unwrap().state.messages;
    let mut ids = Vec::new();
    for seq in 1..=count {
        let message = stream.get_raw_message(seq).await.unwrap();
        let id = message.headers.get("Nats-Msg-Id").unwrap().as_str();
        ids.push(id.parse().unwrap());
    }
    ids
}

async fn wait_for_checkpoint(store: &EventStore, config: &RelayConfig) {
    let head = store.head_position().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint::load(store.pool(), &config.checkpoint)
        .await
        .unwrap()
        < head
    {
        assert!(
            Instant::now() < deadline,
            "the relay did not reach the head"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_appended_event_is_published_once_with_its_headers() {
    let db = TestDb::new().await;
    let store = db.store();
    let js = jetstream::new(testing::connect_nats().await);
    let config = unique_config();
    let ids = append_events(&store, 5, 40).await;

    let relay = RunningRelay::start(&store, &js, &config);
    wait_for_checkpoint(&store, &config).await;
    relay.stop().await;

    let published = published_ids(&js, &config.stream).await;
    assert_eq!(published, ids, "each event once, in position order");
    let stream = js.get_stream(&config.stream).await.unwrap();
    let first = store.read_all(0, 1).await.unwrap().remove(0);
    let message = stream.get_raw_message(1).await.unwrap();
    assert_eq!(
        message.subject.as_str(),
        format!("{}.{}.ItemCounted", config.subject_prefix, first.stream_id)
    );
    let header = |name: &str| message.headers.get(name).unwrap().as_str().to_owned();
    // A CloudEvent (binary mode), and, for one release, the old headers too.
    assert_eq!(header("ce-specversion"), "1.0");
    assert_eq!(header("ce-id"), first.event_id.to_string());
    assert_eq!(header("ce-source"), "/event-store");
    assert_eq!(header("ce-type"), "eventsourced.event-store.ItemCounted");
    assert_eq!(header("ce-subject"), first.stream_id);
    assert_eq!(header("ce-streamversion"), "1");
    assert_eq!(header("ce-position"), first.position.to_string());
    assert_eq!(
        header("ce-dataschema"),
        "urn:eventsourced:event-store:ItemCounted:1"
    );
    assert_eq!(header("Es-Event-Type"), "ItemCounted");
    assert_eq!(header("Es-Stream-Id"), first.stream_id);
    assert_eq!(header("Es-Stream-Version"), "1");
    assert_eq!(header("Es-Position"), first.position.to_string());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&message.payload).unwrap(),
        first.payload
    );
    js.delete_stream(&config.stream).await.unwrap();
}

#[tokio::test]
async fn a_relay_killed_between_publish_and_checkpoint_leaves_each_event_once_in_the_stream() {
    let db = TestDb::new().await;
    let store = db.store();
    let js = jetstream::new(testing::connect_nats().await);
    let config = unique_config();
    let mut ids = append_events(&store, 4, 50).await;

    // Publish everything, then lose the checkpoint: exactly the state a crash after the acks
    // and before the checkpoint write leaves behind.
    let relay = RunningRelay::start(&store, &js, &config);
    wait_for_checkpoint(&store, &config).await;
    relay.stop().await;
    checkpoint::reset(store.pool(), &config.checkpoint, 0)
        .await
        .unwrap();

    // And crash it at arbitrary points while it works through more events.
    ids.extend(append_events(&store, 4, 50).await);
    for delay_ms in [0, 3, 7, 15, 30] {
        let relay = RunningRelay::start(&store, &js, &config);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        relay.kill().await;
    }
    let relay = RunningRelay::start(&store, &js, &config);
    wait_for_checkpoint(&store, &config).await;
    relay.stop().await;

    let published = published_ids(&js, &config.stream).await;
    let unique: HashSet<_> = published.iter().collect();
    assert_eq!(unique.len(), published.len(), "duplicates in the stream");
    assert_eq!(published, ids, "each event once, in position order");
    js.delete_stream(&config.stream).await.unwrap();
}

#[tokio::test]
async fn with_nats_stopped_appends_succeed_and_the_backlog_is_published_when_it_returns() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut server = NatsServer::start();
    let client = event_store::nats::connect(&server.url(), None)
        .await
        .unwrap();
    let js = jetstream::new(client);
    let config = unique_config();
    let relay = RunningRelay::start(&store, &js, &config);

    let mut ids = append_events(&store, 2, 25).await;
    wait_for_messages(&js, &config.stream, 50).await;

    server.stop();
    // Writes do not depend on NATS at all.
    ids.extend(append_events(&store, 3, 50).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();

    wait_for_messages(&js, &config.stream, ids.len() as u64).await;
    wait_for_checkpoint(&store, &config).await;
    relay.stop().await;
    assert_eq!(published_ids(&js, &config.stream).await, ids);
}

/// The process's counters, read back by the tests that expect one to move.
fn counters() -> &'static metrics_util::debugging::Snapshotter {
    static SNAPSHOTTER: std::sync::OnceLock<metrics_util::debugging::Snapshotter> =
        std::sync::OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this test process");
        snapshotter
    })
}

/// Messages the relay sent again for `stream` after `reason` (es_relay_publish_retries_total).
fn publish_retries(stream: &str, reason: &str) -> u64 {
    counters()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| {
            key.key().name() == event_store::metrics::names::PUBLISH_RETRIES
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "stream" && l.value() == stream)
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "reason" && l.value() == reason)
        })
        .map(|(_, _, _, value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn a_publish_not_acknowledged_is_sent_again_in_place_under_the_same_message_id() {
    counters();
    testing::init_tracing();
    let db = TestDb::new().await;
    let store = db.store();
    let mut server = NatsServer::start();
    let client = event_store::nats::connect(&server.url(), None)
        .await
        .unwrap();
    let js = event_store::nats::jetstream(client);
    let config = unique_config();
    let relay = RunningRelay::start(&store, &js, &config);
    let mut ids = append_events(&store, 2, 10).await;
    wait_for_messages(&js, &config.stream, 20).await;

    // Longer than an ack's timeout (`JETSTREAM_TIMEOUT`, 3 s): the acks of what the relay publishes meanwhile fail
    // as they do while a cluster elects a leader, and the relay sends those messages again
    // instead of failing its batch.
    server.stop();
    ids.extend(append_events(&store, 3, 10).await);
    tokio::time::sleep(Duration::from_secs(7)).await;
    server.restart();

    wait_for_messages(&js, &config.stream, ids.len() as u64).await;
    wait_for_checkpoint(&store, &config).await;
    relay.stop().await;
    assert!(
        publish_retries(&config.stream, "timeout") > 0,
        "the unacknowledged messages were sent again in place"
    );
    // The same message ids: JetStream kept each event once however often it arrived.
    assert_eq!(published_ids(&js, &config.stream).await, ids);
}

#[tokio::test]
async fn declaring_a_stream_checks_the_server_version_once_connected() {
    let server = NatsServer::start();
    let client = event_store::nats::connect(&server.url(), None)
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    let name = testing::unique("version");

    event_store::nats::ensure_stream(&js, &name, &format!("{name}.events"))
        .await
        .unwrap();

    let version = client.server_info().version;
    assert!(
        !version.is_empty(),
        "the server's version is known once it answered"
    );
    event_store::nats::check_version(&version).unwrap();
}

#[tokio::test]
async fn many_processes_declaring_one_stream_at_once_all_succeed() {
    // Separate connections, as separate processes (two services, replicas) would have.
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(jetstream::new(testing::connect_nats().await));
    }
    for _ in 0..5 {
        let name = testing::unique("declare");
        let prefix = format!("{name}.events");
        let declared = futures::future::join_all(
            clients
                .iter()
                .map(|js| event_store::nats::ensure_stream(js, &name, &prefix)),
        )
        .await;
        for result in declared {
            let stream = result.expect("every concurrent declaration succeeds");
            assert_eq!(stream.cached_info().config.name, name);
        }
    }
}

/// Waits until some session in the store's database leads `role`, returning its name.
async fn wait_for_leader(store: &EventStore, role: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(name) = leader::holder(store.pool(), role).await.unwrap() {
            return name;
        }
        assert!(
            Instant::now() < deadline,
            "nobody took the {role} leadership"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn of_two_relays_one_leads_and_the_other_takes_over_when_it_dies() {
    let db = TestDb::new().await;
    let store = db.store();
    let js = jetstream::new(testing::connect_nats().await);
    let config = unique_config();

    let first = RunningRelay::start(&store, &js, &config);
    wait_for_leader(&store, &config.checkpoint).await;
    let second = RunningRelay::start(&store, &js, &config);
    let mut ids = append_events(&store, 4, 25).await;
    wait_for_checkpoint(&store, &config).await;
    // One session holds the relay's lock; the second relay is waiting, not publishing.
    let locks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(locks, 1, "exactly one relay leads");

    // The leader dies as a crash would: its lock connection is dropped with it.
    first.kill().await;
    let died = Instant::now();
    ids.extend(append_events(&store, 4, 25).await);
    wait_for_checkpoint(&store, &config).await;
    eprintln!("relay handover and catch-up took {:?}", died.elapsed());
    assert!(leader::holder(store.pool(), &config.checkpoint)
        .await
        .unwrap()
        .is_some());
    second.stop().await;
    // After a clean stop the lock is released at once, not when the session times out.
    assert_eq!(
        leader::holder(store.pool(), &config.checkpoint)
            .await
            .unwrap(),
        None
    );

    let published = published_ids(&js, &config.stream).await;
    assert_eq!(published.len(), ids.len(), "each event exactly once");
    assert_eq!(
        published.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
}

/// The event ids the stream holds (`ce-id`), each as often as it is there.
async fn held_event_ids(js: &jetstream::Context, stream: &str) -> Vec<Uuid> {
    let Ok(stream) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let state = stream.get_info().await.unwrap().state;
    let mut ids = Vec::new();
    if state.messages == 0 {
        return ids;
    }
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(message) = stream.get_raw_message(seq).await {
            let id = message.headers.get("ce-id").unwrap().as_str();
            ids.push(id.parse().unwrap());
        }
    }
    ids
}

/// Waits until the stream holds every one of `ids` (a liveness bound: the relay's tail check
/// runs every `repair::TICK`).
async fn wait_until_held(js: &jetstream::Context, stream: &str, ids: &[Uuid]) -> Duration {
    let started = Instant::now();
    let wanted: HashSet<&Uuid> = ids.iter().collect();
    loop {
        let held = held_event_ids(js, stream).await;
        let held: HashSet<&Uuid> = held.iter().collect();
        let missing = wanted.difference(&held).count();
        if missing == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stream {stream} still lacks {missing} of {} events",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_broker_that_lost_its_storage_is_filled_again_from_the_store_by_an_idle_relay() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut server = NatsServer::start();
    let client = event_store::nats::connect(&server.url(), None)
        .await
        .unwrap();
    let js = jetstream::new(client);
    let config = unique_config();
    let relay = RunningRelay::start(&store, &js, &config);
    let ids = append_events(&store, 3, 20).await;
    wait_for_messages(&js, &config.stream, 60).await;
    wait_for_checkpoint(&store, &config).await;

    // Acknowledged, then lost: the broker comes back with nothing. No new event arrives, so
    // only the relay's own check can notice.
    server.restart_empty();
    let took = wait_until_held(&js, &config.stream, &ids).await;
    eprintln!(
        "REPAIR relay_tail_after_lost_storage_ms={}",
        took.as_millis()
    );

    // Sent again under repair message ids, each once; what follows goes out as usual.
    let later = append_events(&store, 1, 5).await;
    wait_until_held(&js, &config.stream, &later).await;
    relay.stop().await;
    let held = held_event_ids(&js, &config.stream).await;
    assert_eq!(held.len(), ids.len() + later.len(), "each event once");
}

#[tokio::test]
async fn a_stream_deleted_or_purged_behind_the_relay_is_filled_again_from_the_store() {
    let db = TestDb::new().await;
    let store = db.store();
    let js = jetstream::new(testing::connect_nats().await);
    let config = unique_config();
    let relay = RunningRelay::start(&store, &js, &config);
    let mut ids = append_events(&store, 2, 20).await;
    wait_for_messages(&js, &config.stream, 40).await;

    // Deleted, and an event appended meanwhile: the publish fails and the relay checks.
    js.delete_stream(&config.stream).await.unwrap();
    ids.extend(append_events(&store, 1, 3).await);
    wait_until_held(&js, &config.stream, &ids).await;

    // Purged while idle: the periodic check notices.
    js.get_stream(&config.stream)
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    wait_until_held(&js, &config.stream, &ids).await;
    relay.stop().await;
    js.delete_stream(&config.stream).await.unwrap();
}

#[tokio::test]
async fn a_repair_request_is_answered_from_the_store_under_new_message_ids() {
    use event_store::repair::{Reply, Request};
    let db = TestDb::new().await;
    let store = db.store();
    let client = testing::connect_nats().await;
    let js = jetstream::new(client.clone());
    let config = unique_config();
    let relay = RunningRelay::start(&store, &js, &config);
    let ids = append_events(&store, 2, 3).await;
    wait_for_messages(&js, &config.stream, 6).await;
    let stream_id = store.read_all(0, 1).await.unwrap().remove(0).stream_id;

    let ask = |request: Request| {
        let (client, subject) = (client.clone(), config.repair_subject());
        async move {
            let body = serde_json::to_vec(&request).unwrap();
            let reply = client.request(subject, body.into()).await.unwrap();
            serde_json::from_slice::<Reply>(&reply.payload).unwrap()
        }
    };
    let from_version = 2;
    assert_eq!(
        ask(Request::Stream {
            stream_id: stream_id.clone(),
            from_version
        })
        .await,
        Reply::Republished { events: 2 }
    );
    assert_eq!(
        ask(Request::Range {
            after: 0,
            through: i64::MAX
        })
        .await,
        Reply::Republished { events: 6 }
    );
    assert_eq!(
        ask(Request::Which {
            stream_id: stream_id.clone(),
            version: 1
        })
        .await,
        Reply::Holds {
            event_id: Some(ids[0])
        }
    );
    assert_eq!(
        ask(Request::Which {
            stream_id,
            version: 9
        })
        .await,
        Reply::Holds { event_id: None }
    );
    // Not dropped by JetStream's de-duplication of the originals' ids.
    wait_for_messages(&js, &config.stream, 6 + 2 + 6).await;
    let stream = js.get_stream(&config.stream).await.unwrap();
    let repaired = stream.get_raw_message(7).await.unwrap();
    assert_eq!(
        repaired.headers.get("ce-republished").unwrap().as_str(),
        "stream"
    );
    assert_ne!(
        repaired.headers.get("Nats-Msg-Id").unwrap().as_str(),
        repaired.headers.get("ce-id").unwrap().as_str()
    );
    relay.stop().await;
    js.delete_stream(&config.stream).await.unwrap();
}
