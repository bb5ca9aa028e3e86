//! The no-skip guarantee under concurrency: many writers commit out of position order while a
//! tailer follows; it must see every event exactly once, in increasing position.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use event_store::testing::TestDb;
use event_store::{ExpectedVersion, NewEvent, Tail};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const WRITERS: usize = 8;
const EVENTS_PER_WRITER: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailer_sees_every_event_of_eight_concurrent_writers_exactly_once_in_position_order() {
    let db = TestDb::new().await;
    let store = db.store();
    let total = WRITERS * EVENTS_PER_WRITER;

    let shutdown = CancellationToken::new();
    let tailer = {
        let store = store.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tail = Tail::new(store, 0, 1_000);
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
            tokio::spawn(async move {
                let mut written = Vec::with_capacity(EVENTS_PER_WRITER);
                let mut i = 0;
                while i < EVENTS_PER_WRITER {
                    // Mostly single events, now and then a small batch, to vary transaction sizes.
                    let n = if i % 97 == 0 {
                        3.min(EVENTS_PER_WRITER - i)
                    } else {
                        1
                    };
                    let events: Vec<NewEvent> = (0..n)
                        .map(|k| NewEvent::new("Written", json!({ "writer": w, "i": i + k })))
                        .collect();
                    store
                        .append(
                            &format!("writer-{w}"),
                            ExpectedVersion::Exact(i as i64),
                            &events,
                        )
                        .await
                        .unwrap();
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
