//! The no-skip guarantee under concurrency: many writers commit out of position order while a
//! tailer follows; it must see every event exactly once, in increasing position.
// Its helpers unwrap too, and clippy.toml's allow-unwrap-in-tests covers test functions only.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use event_store::checkpoint;
use event_store::testing::{PgServer, TestDb};
use event_store::{EventStore, ExpectedVersion, NewEvent, Tail};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WRITERS: usize = 8;
const EVENTS_PER_WRITER: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailer_sees_every_event_of_eight_concurrent_writers_exactly_once_in_position_order() {
    let db = TestDb::new().await;
    concurrent_writers_and_tailer(&db.store(), 0, "writer", EVENTS_PER_WRITER).await;
}

/// A database moved to another cluster (pg_dump, pg_restore into a fresh initdb), whose
/// transaction ids start far below the ones its events were written with: migrated as a
/// service migrates it at start (by several replicas at once), new events from concurrent
/// writers all land above every stored one, and a tailer from the restored relay-like
/// checkpoint sees each of them exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailer_from_the_restored_checkpoint_sees_every_event_written_after_a_move() {
    const MOVED_EVENTS_PER_WRITER: usize = 200;
    // The source: a server whose transaction ids are those of a long-lived cluster.
    let source = tokio::task::block_in_place(|| PgServer::start_with_xid_epoch(1));
    let db = TestDb::empty_on(&source.url()).await;
    db.store().migrate().await.unwrap();
    // Some history, its relay checkpoint at the head.
    concurrent_writers_and_tailer(&db.store(), 0, "before", 20).await;
    let head = db.store().head_position().await.unwrap();
    checkpoint::save(&db.pool, "relay", head).await.unwrap();
    db.pool.close().await;

    let target = tokio::task::block_in_place(PgServer::start);
    let url = tokio::task::block_in_place(|| target.restore_from(&source.url(), &db.name));
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect(&url)
        .await
        .unwrap();
    // The premise: without raising the offset, the new cluster's transactions would draw
    // positions below the stored ones (and below the checkpoint).
    let xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        xid < head >> 20,
        "the fresh cluster's transaction id {xid} must be below the stored ones ({})",
        head >> 20
    );

    // Replicas starting at once each migrate: the offset is raised once and then stays.
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let store = EventStore::new(pool.clone());
            tokio::spawn(async move { store.migrate().await })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let store = EventStore::new(pool.clone());
    let offset: i64 = sqlx::query_scalar("SELECT xid_offset FROM position_epoch")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(offset > 0, "the offset was not raised");
    assert_eq!(
        store.continue_positions().await.unwrap(),
        None,
        "a further start must change nothing"
    );

    let from = checkpoint::load(&pool, "relay").await.unwrap();
    assert_eq!(from, head);
    let seen = concurrent_writers_and_tailer(&store, from, "after", MOVED_EVENTS_PER_WRITER).await;
    assert!(seen.iter().all(|(position, _)| *position > head));
    let offset_after: i64 = sqlx::query_scalar("SELECT xid_offset FROM position_epoch")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(offset_after, offset, "appends never move the offset");
    pool.close().await;
}

/// [`WRITERS`] writers each append `per_writer` events to a stream of their own
/// (`<prefix>-<n>`, from version 0) while a tailer follows from `from`. Asserts that every
/// appended position is above `from`, and that the tailer sees every event exactly once, in
/// strictly increasing position; returns what it saw, as (position, event id).
async fn concurrent_writers_and_tailer(
    store: &EventStore,
    from: i64,
    prefix: &str,
    per_writer: usize,
) -> Vec<(i64, Uuid)> {
    let total = WRITERS * per_writer;

    let shutdown = CancellationToken::new();
    let tailer = {
        let store = store.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tail = Tail::new(store, from, 1_000);
            let mut seen = Vec::with_capacity(total);
            while seen.len() < total {
                match tail.next_batch(&shutdown).await.unwrap() {
                    Some(batch) => seen.extend(batch.into_iter().map(|e| (e.position, e.event_id))),
                    None => break,
                }
            }
            seen
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let stream = format!("{prefix}-{w}");
            tokio::spawn(async move {
                let mut written = Vec::with_capacity(per_writer);
                let mut i = 0;
                while i < per_writer {
                    // Mostly single events, now and then a small batch, to vary transaction sizes.
                    let n = if i % 97 == 0 {
                        3.min(per_writer - i)
                    } else {
                        1
                    };
                    let events: Vec<NewEvent> = (0..n)
                        .map(|k| NewEvent::new("Written", json!({ "writer": w, "i": i + k })))
                        .collect();
                    let result = store
                        .append(&stream, ExpectedVersion::Exact(i as i64), &events)
                        .await
                        .unwrap();
                    // Fails at once, not by the tailer's timeout, when a position lands below
                    // the tailer's start (and so would never be handed out).
                    assert!(
                        result.first_position > from,
                        "position {} is not above {from}",
                        result.first_position
                    );
                    written.extend(events.iter().map(|e| e.event_id));
                    i += n;
                }
                written
            })
        })
        .collect();
    let mut appended = HashSet::with_capacity(total);
    for w in writers {
        appended.extend(w.await.unwrap());
    }

    // The tailer must finish by itself; the timeout only turns a hang into a failure.
    let seen = tokio::time::timeout(Duration::from_secs(120), tailer)
        .await
        .expect("the tailer stopped short of all events")
        .unwrap();
    shutdown.cancel();

    assert_eq!(seen.len(), total, "events seen");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "positions must strictly increase"
    );
    let seen_ids: HashSet<_> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(seen_ids.len(), total, "an event was handed out twice");
    assert_eq!(seen_ids, appended, "the tailer missed events");
    seen
}

#[tokio::test]
async fn a_tailer_is_woken_by_an_append_and_stops_on_shutdown() {
    let db = TestDb::new().await;
    let store = db.store();
    let shutdown = CancellationToken::new();
    let mut tail = Tail::new(store.clone(), 0, 10);

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            store
                .append(
                    "wake-1",
                    ExpectedVersion::Any,
                    &[NewEvent::new("Ping", json!({}))],
                )
                .await
                .unwrap();
        })
    };
    let batch = tail.next_batch(&shutdown).await.unwrap().unwrap();
    writer.await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(tail.position(), batch[0].position);

    shutdown.cancel();
    assert!(tail.next_batch(&shutdown).await.unwrap().is_none());
}

#[tokio::test]
async fn a_caught_up_tailer_waits_without_reading_yet_sees_an_append_made_between_its_calls() {
    let db = TestDb::new().await;
    let store = db.store();
    let shutdown = CancellationToken::new();
    let mut tail = Tail::new(store.clone(), 0, 10);
    let ping = |stream: &'static str| {
        let store = store.clone();
        async move {
            store
                .append(
                    stream,
                    ExpectedVersion::Any,
                    &[NewEvent::new("Ping", json!({}))],
                )
                .await
                .unwrap();
        }
    };
    let within = |ms| Some(std::time::Instant::now() + Duration::from_millis(ms));

    ping("quiet-1").await;
    assert_eq!(tail.next_batch(&shutdown).await.unwrap().unwrap().len(), 1);
    // That read returned less than a page and held nothing back: with nothing appended since,
    // waiting for more costs no read.
    let reads = tail.reads();
    let idle = tail
        .next_batch_until(within(200), &shutdown)
        .await
        .unwrap()
        .unwrap();
    assert!(idle.is_empty());
    assert_eq!(
        tail.reads(),
        reads,
        "a caught-up tailer read the store with nothing appended"
    );

    // An append made while nobody waited (between two calls) still reaches the next call at
    // once, not at the fallback poll a second after the last read.
    ping("quiet-2").await;
    let next = tail
        .next_batch_until(within(500), &shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        next.len(),
        1,
        "an append made between calls waited for the fallback poll"
    );
}
