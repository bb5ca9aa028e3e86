//! Appends and reads against a real Postgres, a fresh database per test.
// Its helpers unwrap too, and clippy.toml's allow-unwrap-in-tests covers test functions only.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use event_store::testing::TestDb;
use event_store::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StreamAppend};
use serde_json::json;

/// `read_all` from the start once it hands out `expected` events. A transaction that has
/// just ended in another test's database may still hold events back for a moment (see
/// `store::HORIZON_SQL`); that delays them, never skips them.
async fn read_all_settled(store: &EventStore, expected: usize) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = store.read_all(0, 1_000).await.unwrap();
        if all.len() >= expected || Instant::now() > deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Rows in the events table, whatever their visibility to readers.
async fn stored(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

fn event(n: i64) -> NewEvent {
    NewEvent::new("Counted", json!({ "n": n }))
}

#[tokio::test]
async fn appends_are_read_back_in_order_with_versions_and_positions() {
    let db = TestDb::new().await;
    let store = db.store();

    let first = store
        .append(
            "counter-1",
            ExpectedVersion::NoStream,
            &[event(1), event(2)],
        )
        .await
        .unwrap();
    let second = store
        .append("counter-1", ExpectedVersion::Exact(2), &[event(3)])
        .await
        .unwrap();

    assert_eq!(first.stream_version, 2);
    assert_eq!(second.stream_version, 3);
    assert!(first.first_position < first.last_position);
    assert!(first.last_position < second.first_position);
    let stream = store.read_stream("counter-1", 1).await.unwrap();
    let ns: Vec<i64> = stream
        .iter()
        .map(|e| e.payload["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2, 3]);
    assert_eq!(
        stream.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(store.read_stream("counter-1", 3).await.unwrap().len(), 1);
    let all = read_all_settled(&store, 3).await;
    assert_eq!(all, stream);
    assert!(store
        .read_all(second.last_position, 100)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_wrong_expected_version_is_a_typed_conflict_with_expected_and_actual() {
    let db = TestDb::new().await;
    let store = db.store();
    store
        .append("s-1", ExpectedVersion::NoStream, &[event(1), event(2)])
        .await
        .unwrap();

    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(5),
    ] {
        let err = store
            .append("s-1", expected, &[event(9)])
            .await
            .unwrap_err();
        match err {
            StoreError::Conflict {
                stream_id,
                expected: e,
                actual,
            } => {
                assert_eq!(stream_id, "s-1");
                assert_eq!(e, expected);
                assert_eq!(actual, 2);
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    let err = store
        .append("s-2", ExpectedVersion::Exact(1), &[event(1)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: 0, .. }),
        "{err:?}"
    );
    assert_eq!(store.read_stream("s-1", 1).await.unwrap().len(), 2);
}

#[tokio::test]
async fn concurrent_appends_with_the_same_expected_version_let_exactly_one_win() {
    let db = TestDb::new().await;
    let store = db.store();
    store
        .append("race-1", ExpectedVersion::NoStream, &[event(0)])
        .await
        .unwrap();

    let attempts = (0..10).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append("race-1", ExpectedVersion::Exact(1), &[event(i)])
                .await
        })
    });
    let results = futures::future::join_all(attempts).await;

    let wins = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r.as_ref().unwrap(), Err(StoreError::Conflict { .. })))
        .count();
    assert_eq!((wins, conflicts), (1, 9));
    assert_eq!(store.stream_version("race-1").await.unwrap(), 2);
}

#[tokio::test]
async fn concurrent_appends_with_any_version_all_land_with_distinct_versions() {
    let db = TestDb::new().await;
    let store = db.store();
    let writers = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            for j in 0..20 {
                store
                    .append("shared-1", ExpectedVersion::Any, &[event(i * 100 + j)])
                    .await
                    .unwrap();
            }
        })
    });
    futures::future::join_all(writers).await;

    let versions: Vec<i64> = store
        .read_stream("shared-1", 1)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, (1..=160).collect::<Vec<_>>());
}

#[tokio::test]
async fn retrying_an_append_returns_the_original_result_and_stores_nothing_twice() {
    let db = TestDb::new().await;
    let store = db.store();
    let events = [event(1), event(2)];
    let original = store
        .append("idem-1", ExpectedVersion::NoStream, &events)
        .await
        .unwrap();
    store
        .append("idem-1", ExpectedVersion::Exact(2), &[event(3)])
        .await
        .unwrap();

    // The retry's expected version no longer matches, yet it is recognised as a retry.
    let retried = store
        .append("idem-1", ExpectedVersion::NoStream, &events)
        .await
        .unwrap();
    let retried_any = store
        .append("idem-1", ExpectedVersion::Any, &events)
        .await
        .unwrap();

    assert_eq!(retried, original);
    assert_eq!(retried_any, original);
    assert_eq!(store.read_stream("idem-1", 1).await.unwrap().len(), 3);
}

#[tokio::test]
async fn reusing_an_event_id_with_other_content_is_an_error() {
    let db = TestDb::new().await;
    let store = db.store();
    let original = event(1);
    store
        .append(
            "idem-2",
            ExpectedVersion::NoStream,
            std::slice::from_ref(&original),
        )
        .await
        .unwrap();

    let forged = NewEvent::new("Counted", json!({ "n": 666 })).with_id(original.event_id);
    let err = store
        .append(
            "idem-2",
            ExpectedVersion::Any,
            std::slice::from_ref(&forged),
        )
        .await
        .unwrap_err();
    let err_other_stream = store
        .append("idem-3", ExpectedVersion::NoStream, &[forged])
        .await
        .unwrap_err();

    for err in [err, err_other_stream] {
        assert!(
            matches!(err, StoreError::EventIdReused { event_id } if event_id == original.event_id),
            "{err:?}"
        );
    }
    assert_eq!(stored(&db).await, 1);
}

#[tokio::test]
async fn a_multi_stream_append_is_all_or_nothing() {
    let db = TestDb::new().await;
    let store = db.store();
    store
        .append("stock-a", ExpectedVersion::NoStream, &[event(10)])
        .await
        .unwrap();
    store
        .append("stock-b", ExpectedVersion::NoStream, &[event(20)])
        .await
        .unwrap();

    let stale = vec![
        StreamAppend {
            stream_id: "stock-a".into(),
            expected: ExpectedVersion::Exact(1),
            events: vec![event(11)],
        },
        StreamAppend {
            stream_id: "stock-b".into(),
            expected: ExpectedVersion::Exact(7),
            events: vec![event(21)],
        },
        StreamAppend {
            stream_id: "reservation-1".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![event(1)],
        },
    ];
    let err = store.append_multi(&stale).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { stream_id, actual: 1, .. } if stream_id == "stock-b"),
        "{err:?}"
    );
    assert_eq!(stored(&db).await, 2);

    let mut fresh = stale;
    fresh[1].expected = ExpectedVersion::Exact(1);
    let results = store.append_multi(&fresh).await.unwrap();
    assert_eq!(
        results.iter().map(|r| r.stream_version).collect::<Vec<_>>(),
        [2, 2, 1]
    );
    // One transaction: consecutive positions of one transaction id.
    let all = read_all_settled(&store, 5).await;
    assert_eq!(all.len(), 5);
    let last_three: Vec<i64> = all[2..].iter().map(|e| e.position).collect();
    assert_eq!(last_three[1] - last_three[0], 1);
    assert_eq!(last_three[2] - last_three[1], 1);
    // And its retry is recognised.
    assert_eq!(store.append_multi(&fresh).await.unwrap(), results);
}

#[tokio::test]
async fn bad_stream_ids_and_event_types_are_refused_before_touching_the_database() {
    let db = TestDb::new().await;
    let store = db.store();
    for bad in ["", "has space", "dot.ted", "star*", "gt>", &"x".repeat(201)] {
        let err = store
            .append(bad, ExpectedVersion::Any, &[event(1)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidStreamId(_)),
            "{bad:?}: {err:?}"
        );
    }
    let err = store
        .append(
            "ok-1",
            ExpectedVersion::Any,
            &[NewEvent::new("Bad.Type", json!({}))],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidEventType(_)), "{err:?}");
    let err = store
        .append("ok-1", ExpectedVersion::Any, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Empty), "{err:?}");
}

#[tokio::test]
async fn read_all_withholds_events_committed_after_an_older_transaction_still_running() {
    let db = TestDb::new().await;
    let store = db.store();

    // An appending transaction takes its transaction id (and so its positions) first...
    let mut older = db.pool.begin().await.unwrap();
    store
        .append_in_tx(
            &mut older,
            &[StreamAppend {
                stream_id: "slow-1".into(),
                expected: ExpectedVersion::Any,
                events: vec![event(1)],
            }],
        )
        .await
        .unwrap();
    // ...a younger one commits a higher position while the older one is still open.
    store
        .append("fast-1", ExpectedVersion::Any, &[event(2)])
        .await
        .unwrap();

    assert!(
        store.read_all(0, 100).await.unwrap().is_empty(),
        "handing out the younger event now would skip the older one for good"
    );
    older.commit().await.unwrap();
    let all = read_all_settled(&store, 2).await;
    assert_eq!(
        all.iter().map(|e| e.stream_id.as_str()).collect::<Vec<_>>(),
        ["slow-1", "fast-1"]
    );
}

#[tokio::test]
async fn a_transaction_running_in_another_database_does_not_hold_read_all_back() {
    let (db, elsewhere) = (TestDb::new().await, TestDb::new().await);
    let store = db.store();
    // Another database's transaction takes its id (it cannot write this store's table)...
    let mut neighbour = elsewhere.pool.begin().await.unwrap();
    elsewhere
        .store()
        .append_in_tx(
            &mut neighbour,
            &[StreamAppend {
                stream_id: "far-1".into(),
                expected: ExpectedVersion::Any,
                events: vec![event(1)],
            }],
        )
        .await
        .unwrap();
    // ...and a younger one commits here.
    store
        .append("near-1", ExpectedVersion::Any, &[event(2)])
        .await
        .unwrap();

    let read = store.read_all(0, 100).await.unwrap();
    assert_eq!(read.len(), 1, "held back by another database's transaction");
    neighbour.rollback().await.unwrap();
}

#[tokio::test]
async fn an_append_that_would_land_below_the_streams_last_event_conflicts_and_its_retry_lands_above(
) {
    let db = TestDb::new().await;
    let store = db.store();
    store
        .append("s-1", ExpectedVersion::NoStream, &[event(1)])
        .await
        .unwrap();
    // A transaction takes its id (as a consumer does with its inbox entry) ...
    let mut early = db.pool.begin().await.unwrap();
    store
        .append_in_tx(
            &mut early,
            &[StreamAppend {
                stream_id: "other".into(),
                expected: ExpectedVersion::Any,
                events: vec![event(0)],
            }],
        )
        .await
        .unwrap();
    // ... version 2 is committed by a younger transaction meanwhile ...
    store
        .append("s-1", ExpectedVersion::Exact(1), &[event(2)])
        .await
        .unwrap();

    // ... so version 3 from the older transaction would come before version 2 in position order.
    let err = store
        .append_in_tx(
            &mut early,
            &[StreamAppend {
                stream_id: "s-1".into(),
                expected: ExpectedVersion::Exact(2),
                events: vec![event(3)],
            }],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    drop(early);

    let mut retry = db.pool.begin().await.unwrap();
    store
        .append_in_tx(
            &mut retry,
            &[StreamAppend {
                stream_id: "s-1".into(),
                expected: ExpectedVersion::Exact(2),
                events: vec![event(3)],
            }],
        )
        .await
        .unwrap();
    retry.commit().await.unwrap();
    let stream = store.read_stream("s-1", 1).await.unwrap();
    let positions: Vec<i64> = stream.iter().map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(stream.len(), 3);
}
