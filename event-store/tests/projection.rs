//! Projectors against a real Postgres: exactly-once application, wake-ups, rollback and retry,
//! leadership, restart from the checkpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_store::projection::{checkpoint_name, Projection, Projector};
use event_store::testing::{catch_up, init_tracing, TestDb};
use event_store::{checkpoint, EventStore, ExpectedVersion, NewEvent, RecordedEvent};
use futures::future::BoxFuture;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Counts events per stream in `stream_counts`; can be told to fail on given events.
struct CountPerStream {
    name: String,
    /// Event id -> how many more times applying it fails.
    failures: Mutex<HashMap<Uuid, u32>>,
    /// Calls of `apply`, including those whose transaction was rolled back.
    calls: AtomicU64,
    /// Calls of `apply_batch`.
    batches: AtomicU64,
}

impl CountPerStream {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(CountPerStream {
            name: name.to_owned(),
            failures: Mutex::default(),
            calls: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        })
    }

    fn fail(&self, event_id: Uuid, times: u32) {
        self.failures.lock().unwrap().insert(event_id, times);
    }
}

impl Projection for CountPerStream {
    fn name(&self) -> &str {
        &self.name
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            sqlx::query(
                "INSERT INTO stream_counts (stream_id, n) VALUES ($1, 1) \
                 ON CONFLICT (stream_id) DO UPDATE SET n = stream_counts.n + 1",
            )
            .bind(&event.stream_id)
            .execute(&mut *tx)
            .await?;
            if let Some(left) = self.failures.lock().unwrap().get_mut(&event.event_id) {
                if *left > 0 {
                    *left -= 1;
                    anyhow::bail!("told to fail");
                }
            }
            Ok(())
        })
    }

    fn apply_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.batches.fetch_add(1, Ordering::SeqCst);
            for event in events {
                self.apply(&mut *tx, event).await?;
            }
            Ok(())
        })
    }
}

async fn setup() -> (TestDb, EventStore) {
    init_tracing();
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE stream_counts (stream_id text PRIMARY KEY, n bigint NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    // One store value shared by writers and projectors, so appends wake the projectors.
    let store = db.store();
    (db, store)
}

/// Appends `per_stream` events to each of `streams`; returns the event ids in append order.
async fn append(store: &EventStore, streams: &[&str], per_stream: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for stream in streams {
        for n in 0..per_stream {
            let event = NewEvent::new("Counted", json!({ "n": n }));
            ids.push(event.event_id);
            store
                .append(stream, ExpectedVersion::Any, &[event])
                .await
                .unwrap();
        }
    }
    ids
}

async fn counts(pool: &PgPool) -> HashMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>("SELECT stream_id, n FROM stream_counts")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn total(pool: &PgPool) -> i64 {
    counts(pool).await.values().sum()
}

fn spawn(store: &EventStore, projection: Arc<CountPerStream>, batch: i64) -> Running {
    run(Projector::new(store.clone(), projection).with_batch_size(batch))
}

fn run(projector: Projector) -> Running {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(projector.run(shutdown.clone()));
    Running { shutdown, task }
}

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the projector stops on shutdown")
            .unwrap();
    }
}

/// Polls `condition` until it holds, failing after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stored_checkpoint(pool: &PgPool, projection: &str) -> i64 {
    checkpoint::load(pool, &checkpoint_name(projection))
        .await
        .unwrap()
}

#[tokio::test]
async fn every_event_is_applied_exactly_once_and_the_checkpoint_advances_to_the_last() {
    let (db, store) = setup().await;
    append(&store, &["a-1", "b-2", "c-3"], 7).await;
    let head = store.head_position().await.unwrap();
    let projection = CountPerStream::new("counts");

    let running = spawn(&store, projection.clone(), 4);
    eventually(
        Duration::from_secs(10),
        "all 21 events are applied",
        || async { stored_checkpoint(&db.pool, "counts").await == head },
    )
    .await;
    running.stop().await;

    let counts = counts(&db.pool).await;
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|n| *n == 7), "{counts:?}");
    assert_eq!(projection.calls.load(Ordering::SeqCst), 21);
}

#[tokio::test]
async fn events_appended_while_it_runs_are_applied_promptly() {
    let (db, store) = setup().await;
    append(&store, &["a-1"], 3).await;
    let running = spawn(&store, CountPerStream::new("counts"), 500);
    eventually(
        Duration::from_secs(10),
        "the first events are applied",
        || async { total(&db.pool).await == 3 },
    )
    .await;

    append(&store, &["a-1", "b-1"], 5).await;

    // A liveness guard, not a benchmark: a woken projector needs milliseconds.
    eventually(
        Duration::from_secs(3),
        "the later events are applied",
        || async { total(&db.pool).await == 13 },
    )
    .await;
    running.stop().await;
    assert_eq!(counts(&db.pool).await["a-1"], 8);
}

#[tokio::test]
async fn a_failing_apply_rolls_the_batch_back_and_is_retried_without_double_application() {
    let (db, store) = setup().await;
    let ids = append(&store, &["a-1", "b-1"], 5).await;
    let projection = CountPerStream::new("counts");
    // The 4th event of b-1 fails twice; the events before it in its batch are rolled back too.
    projection.fail(ids[8], 2);
    let head = store.head_position().await.unwrap();

    let running = spawn(&store, projection.clone(), 10);
    eventually(Duration::from_secs(10), "everything is applied", || async {
        stored_checkpoint(&db.pool, "counts").await == head
    })
    .await;
    running.stop().await;

    // Each failing attempt had already counted its event (and those before it in the batch):
    // exact counts show those attempts were rolled back.
    let counts = counts(&db.pool).await;
    assert_eq!((counts["a-1"], counts["b-1"]), (5, 5));
    assert_eq!(
        projection.failures.lock().unwrap()[&ids[8]],
        0,
        "it failed twice"
    );
    assert!(projection.calls.load(Ordering::SeqCst) >= 10 + 2);
}

#[tokio::test]
async fn two_projectors_of_one_projection_never_apply_an_event_twice() {
    let (db, store) = setup().await;
    append(&store, &["a-1", "b-1"], 20).await;
    let first = CountPerStream::new("counts");
    let second = CountPerStream::new("counts");

    let a = spawn(&store, first.clone(), 3);
    let b = spawn(&store, second.clone(), 3);
    // A leaderless catch-up racing them is kept out by the checkpoint's row lock.
    let third = CountPerStream::new("counts");
    let racing = catch_up(&store, third.as_ref());
    let more = append(&store, &["a-1", "c-1"], 10);
    let (racing, _) = tokio::join!(racing, more);
    racing.unwrap();
    let head = store.head_position().await.unwrap();
    eventually(Duration::from_secs(10), "everything is applied", || async {
        stored_checkpoint(&db.pool, "counts").await == head
    })
    .await;
    a.stop().await;
    b.stop().await;

    let counts = counts(&db.pool).await;
    assert_eq!((counts["a-1"], counts["b-1"], counts["c-1"]), (30, 20, 10));
    // Only one of the two projectors led (the catch-up may have taken some events).
    let calls = (
        first.calls.load(Ordering::SeqCst),
        second.calls.load(Ordering::SeqCst),
    );
    assert!(
        calls.0 == 0 || calls.1 == 0,
        "both projectors applied events: {calls:?}"
    );
}

#[tokio::test]
async fn a_restarted_projector_resumes_from_its_checkpoint() {
    let (db, store) = setup().await;
    append(&store, &["a-1"], 6).await;
    let running = spawn(&store, CountPerStream::new("counts"), 500);
    eventually(
        Duration::from_secs(10),
        "the first events are applied",
        || async { total(&db.pool).await == 6 },
    )
    .await;
    running.stop().await;

    append(&store, &["a-1", "b-1"], 2).await;
    let head = store.head_position().await.unwrap();
    let restarted = CountPerStream::new("counts");
    let running = spawn(&store, restarted.clone(), 500);
    eventually(
        Duration::from_secs(10),
        "the new events are applied",
        || async { stored_checkpoint(&db.pool, "counts").await == head },
    )
    .await;
    running.stop().await;

    assert_eq!(restarted.calls.load(Ordering::SeqCst), 4);
    let counts = counts(&db.pool).await;
    assert_eq!((counts["a-1"], counts["b-1"]), (8, 2));
}

#[tokio::test]
async fn a_projector_whose_lock_connection_breaks_regains_leadership_and_continues() {
    let (db, store) = setup().await;
    append(&store, &["a-1"], 3).await;
    let running = spawn(&store, CountPerStream::new("counts"), 500);
    eventually(
        Duration::from_secs(10),
        "the first events are applied",
        || async { total(&db.pool).await == 3 },
    )
    .await;

    // Only the projector holds advisory locks in this test's database.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
         JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND d.datname = current_database()",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(killed, [true]);
    append(&store, &["a-1"], 2).await;

    eventually(
        Duration::from_secs(15),
        "the later events are applied",
        || async { total(&db.pool).await == 5 },
    )
    .await;
    running.stop().await;
    assert_eq!(counts(&db.pool).await["a-1"], 5);
}

#[tokio::test]
async fn a_paced_projector_applies_a_trickle_of_appends_in_a_few_batches() {
    let (db, store) = setup().await;
    let projection = CountPerStream::new("paced");
    let running = run(
        Projector::new(store.clone(), projection.clone()).with_pace(Duration::from_millis(400))
    );
    // Twenty appends about 10 ms apart, each waking the projector: unpaced, it applies them
    // an event or two a batch.
    for _ in 0..20 {
        append(&store, &["trickle"], 1).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eventually(
        Duration::from_secs(10),
        "the trickle is applied",
        || async { total(&db.pool).await == 20 },
    )
    .await;
    running.stop().await;
    let batches = projection.batches.load(Ordering::SeqCst);
    assert!(
        batches <= 5,
        "{batches} batches for 20 appends made in about 200 ms, at a pace of 400 ms"
    );
}
