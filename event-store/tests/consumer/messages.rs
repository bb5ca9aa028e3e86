//! One message at a time: handled once, recorded in the inbox, duplicates, conflicts, poison,
//! early arrivals, transient failures, a deleted consumer, NATS down, replicas.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use event_store::consumer::{dead_letter_headers, Consumer};
use event_store::testing::{read_inbox, NatsServer};
use event_store::Metadata;
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::fixture::*;

#[tokio::test]
async fn each_event_is_handled_once_and_recorded_in_the_inbox() {
    let fx = Fixture::new().await;
    let running = fx.start();
    let mut published = Vec::new();
    for stream in ["thing-1", "thing-2"] {
        for version in 1..=3 {
            let id = Uuid::now_v7();
            fx.publish_event(id, stream, version).await;
            published.push((id, stream.to_owned(), version));
        }
    }

    eventually(
        Duration::from_secs(10),
        "six events are handled",
        || async { handled_count(&fx.db.pool).await == 6 },
    )
    .await;
    fx.drained().await;
    assert_eq!(running.stop().await, 0);

    let mut handled = fx.handled().await;
    handled.sort_by(|a, b| (&a.1, a.2).cmp(&(&b.1, b.2)));
    assert_eq!(handled, published);
    let inbox = read_inbox(&fx.db.pool, 0, 100).await.unwrap();
    assert_eq!(inbox.len(), 6);
    let (_, first) = inbox
        .iter()
        .find(|(_, e)| e.event_id == published[0].0)
        .unwrap();
    assert_eq!(first.event_type, "Happened");
    assert_eq!(first.source_position, 1048577);
    assert_eq!(first.payload, json!({ "version": 1 }));
    assert_eq!(
        first.metadata,
        Metadata {
            correlation_id: Some("req-1".to_owned()),
            ..Metadata::default()
        }
    );
    assert!(inbox.windows(2).all(|w| w[0].0 < w[1].0), "seq ascends");
    assert_eq!(
        read_inbox(&fx.db.pool, inbox[3].0, 100)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_redelivered_event_is_recognised_by_the_inbox_after_jetstreams_window() {
    let fx = Fixture::without_stream().await;
    // The stream is created here with a short duplicate window, so JetStream stores the second
    // copy of the event (its ack says it is no duplicate) and only the inbox can catch it.
    fx.js
        .create_stream(stream::Config {
            name: fx.config.stream.clone(),
            subjects: vec![format!("{}.>", fx.config.subject_prefix)],
            duplicate_window: Duration::from_millis(100),
            ..Default::default()
        })
        .await
        .unwrap();
    let running = fx.start();
    let id = Uuid::now_v7();
    fx.publish_event(id, "thing-1", 1).await;
    eventually(Duration::from_secs(10), "the event is handled", || async {
        handled_count(&fx.db.pool).await == 1
    })
    .await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    let payload = json!({ "version": 1 }).to_string();
    let dropped = fx
        .publish("thing-1", headers(id, "thing-1", 1), payload)
        .await;
    assert!(
        !dropped,
        "JetStream's window has passed, so it stores the copy"
    );
    let after = Uuid::now_v7();
    fx.publish_event(after, "thing-1", 2).await;

    eventually(
        Duration::from_secs(10),
        "the next event is handled",
        || async { handled_count(&fx.db.pool).await == 2 },
    )
    .await;
    fx.drained().await;
    assert_eq!(running.stop().await, 0);
    let stream = fx.js.get_stream(&fx.config.stream).await.unwrap();
    assert_eq!(stream.get_info().await.unwrap().state.messages, 3);
    let handled: Vec<Uuid> = fx.handled().await.into_iter().map(|h| h.0).collect();
    assert_eq!(handled, [id, after]);
    assert_eq!(fx.reaction.attempts(id), 1);
}

#[tokio::test]
async fn a_different_event_claiming_a_recorded_version_is_dead_lettered_naming_both_events() {
    let fx = Fixture::new().await;
    let running = fx.start();
    let (first, forged, next) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    fx.publish_event(first, "thing-1", 1).await;
    eventually(Duration::from_secs(10), "the event is handled", || async {
        handled_count(&fx.db.pool).await == 1
    })
    .await;
    // A forged message, or the producer restored from a backup writing version 1 again.
    fx.publish_event(forged, "thing-1", 1).await;
    fx.publish_event(next, "thing-1", 2).await;

    eventually(
        Duration::from_secs(10),
        "the next event is handled",
        || async { handled_count(&fx.db.pool).await == 2 },
    )
    .await;
    fx.drained().await;
    assert_eq!(running.stop().await, 1, "the later claim is dead-lettered");
    let handled: Vec<Uuid> = fx.handled().await.into_iter().map(|h| h.0).collect();
    assert_eq!(handled, [first, next]);
    let (kind, error): (String, String) = sqlx::query_as("SELECT kind, error FROM dead_letters")
        .fetch_one(&fx.db.pool)
        .await
        .unwrap();
    assert_eq!(kind, "version_conflict");
    assert!(error.contains(&first.to_string()), "{error}");
    assert!(error.contains(&forged.to_string()), "{error}");
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_the_messages_behind_them_still_handled() {
    let fx = Fixture::new().await;
    let mut dead_letter_subscription = fx
        .client
        .subscribe(fx.config.dead_letter_subject.clone())
        .await
        .unwrap();
    fx.client.flush().await.unwrap();
    let running = fx.start();

    let good = |v: i64| json!({ "version": v }).to_string();
    let cases: Vec<(&str, HeaderMap, String)> = vec![
        (
            "not-json",
            headers(Uuid::now_v7(), "bad-1", 1),
            "{ not json".to_owned(),
        ),
        (
            "no-stream-id",
            headers_with(Uuid::now_v7(), "bad-2", "1", &["Es-Stream-Id"]),
            good(1),
        ),
        (
            "no-message-id",
            headers_with(Uuid::now_v7(), "bad-3", "1", &["Nats-Msg-Id"]),
            good(1),
        ),
        (
            "bad-version",
            headers_with(Uuid::now_v7(), "bad-4", "first", &[]),
            good(1),
        ),
        (
            "nul-character",
            headers(Uuid::now_v7(), "bad-6", 1),
            json!({ "text": "a\u{0}b" }).to_string(),
        ),
        (
            "handler-poison",
            headers(Uuid::now_v7(), "bad-5", 1),
            json!({ "poison": true }).to_string(),
        ),
    ];
    for (case, headers, payload) in &cases {
        fx.publish(&format!("bad-{case}"), headers.clone(), payload.clone())
            .await;
    }
    let good_ids = [Uuid::now_v7(), Uuid::now_v7()];
    fx.publish_event(good_ids[0], "thing-1", 1).await;
    fx.publish_event(good_ids[1], "thing-1", 2).await;

    let mut received = Vec::new();
    while received.len() < cases.len() {
        let message =
            tokio::time::timeout(Duration::from_secs(10), dead_letter_subscription.next())
                .await
                .expect("a dead letter is published")
                .unwrap();
        received.push(message);
    }
    eventually(
        Duration::from_secs(10),
        "the good events are handled",
        || async { handled_count(&fx.db.pool).await == 2 },
    )
    .await;
    fx.drained().await;
    assert_eq!(running.stop().await, cases.len() as u64);

    let handled: Vec<Uuid> = fx.handled().await.into_iter().map(|h| h.0).collect();
    assert_eq!(handled, good_ids);
    assert!(read_inbox(&fx.db.pool, 0, 100)
        .await
        .unwrap()
        .iter()
        .all(|(_, e)| e.stream_id == "thing-1"));
    let recorded = fx.dead_letters().await;
    assert_eq!(recorded.len(), cases.len());
    for ((case, _, payload), (consumer, error, stored)) in cases.iter().zip(&recorded) {
        assert_eq!(consumer, "test-consumer", "{case}");
        assert!(!error.is_empty(), "{case}");
        assert_eq!(stored, payload.as_bytes(), "{case}");
    }
    assert!(recorded[0].1.contains("not JSON"), "{}", recorded[0].1);
    assert!(recorded[1].1.contains("Es-Stream-Id"), "{}", recorded[1].1);
    assert!(recorded[4].1.contains("NUL"), "{}", recorded[4].1);
    let handler_poison = &recorded[5].1;
    assert!(
        handler_poison.contains("record-handled"),
        "{handler_poison}"
    );
    for (message, (case, headers, payload)) in received.iter().zip(&cases) {
        let h = message.headers.as_ref().unwrap();
        assert_eq!(message.payload.as_ref(), payload.as_bytes(), "{case}");
        assert_eq!(
            h.get(dead_letter_headers::CONSUMER).unwrap().as_str(),
            "test-consumer"
        );
        assert!(!h
            .get(dead_letter_headers::ERROR)
            .unwrap()
            .as_str()
            .is_empty());
        for (name, values) in headers.iter() {
            let forwarded = h.get(name.clone()).map(|v| v.as_str());
            assert_eq!(
                forwarded,
                values.first().map(|v| v.as_str()),
                "{case}: {name}"
            );
        }
    }
}

#[tokio::test]
async fn an_event_that_arrives_before_its_predecessor_is_applied_after_it() {
    let fx = Fixture::new().await;
    let (v1, v2, v3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    fx.publish_event(v3, "thing-1", 3).await;
    fx.publish_event(v2, "thing-1", 2).await;
    fx.publish_event(v1, "thing-1", 1).await;
    let running = fx.start();

    eventually(Duration::from_secs(15), "all three are handled", || async {
        handled_count(&fx.db.pool).await == 3
    })
    .await;
    fx.drained().await;
    assert_eq!(running.stop().await, 0);

    let versions: Vec<i64> = fx.handled().await.into_iter().map(|h| h.2).collect();
    assert_eq!(versions, [1, 2, 3]);
    let inbox: Vec<i64> = read_inbox(&fx.db.pool, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.stream_version)
        .collect();
    assert_eq!(inbox, [1, 2, 3]);
}

#[tokio::test]
async fn a_handler_failing_transiently_is_retried_and_applies_the_event_once() {
    let fx = Fixture::new().await;
    let id = Uuid::now_v7();
    fx.reaction.fail(id, 2);
    let running = fx.start();
    fx.publish_event(id, "thing-1", 1).await;

    eventually(Duration::from_secs(15), "the event is handled", || async {
        handled_count(&fx.db.pool).await == 1
    })
    .await;
    fx.drained().await;
    assert_eq!(running.stop().await, 0);

    assert_eq!(fx.reaction.attempts(id), 3);
    assert_eq!(fx.handled().await.len(), 1);
    assert_eq!(read_inbox(&fx.db.pool, 0, 10).await.unwrap().len(), 1);
    assert!(fx.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_handler_that_keeps_failing_is_dead_lettered_at_max_deliver_not_dropped() {
    let mut fx = Fixture::new().await;
    fx.config.max_deliver = 3;
    let id = Uuid::now_v7();
    fx.reaction.fail(id, u32::MAX);
    let running = fx.start();
    fx.publish_event(id, "thing-1", 1).await;

    eventually(
        Duration::from_secs(15),
        "the event is dead-lettered",
        || async { !fx.dead_letters().await.is_empty() },
    )
    .await;
    fx.drained().await;
    assert_eq!(running.stop().await, 1);

    assert_eq!(fx.reaction.attempts(id), 3);
    assert!(fx.handled().await.is_empty());
    let error = &fx.dead_letters().await[0].1;
    assert!(
        error.contains("3 deliveries") && error.contains("told to fail"),
        "{error}"
    );
}

#[tokio::test]
async fn a_deleted_durable_consumer_is_recreated_and_replays_without_effect() {
    let fx = Fixture::new().await;
    let running = fx.start();
    let first = Uuid::now_v7();
    fx.publish_event(first, "thing-1", 1).await;
    eventually(
        Duration::from_secs(10),
        "the first event is handled",
        || async { handled_count(&fx.db.pool).await == 1 },
    )
    .await;

    let stream = fx.js.get_stream(&fx.config.stream).await.unwrap();
    stream.delete_consumer(&fx.config.durable).await.unwrap();
    let second = Uuid::now_v7();
    fx.publish_event(second, "thing-1", 2).await;

    // The recreated consumer starts from the stream's beginning again: the inbox skips `first`.
    eventually(
        Duration::from_secs(30),
        "the second event is handled",
        || async { handled_count(&fx.db.pool).await == 2 },
    )
    .await;
    fx.drained().await;
    assert_eq!(running.stop().await, 0);
    let handled: Vec<Uuid> = fx.handled().await.into_iter().map(|h| h.0).collect();
    assert_eq!(handled, [first, second]);
}

#[tokio::test]
async fn a_consumer_started_while_nats_is_down_waits_and_then_consumes() {
    let fx = Fixture::without_stream().await;
    let mut server = NatsServer::start();
    server.stop();
    let client = event_store::nats::connect(&server.url(), None)
        .await
        .unwrap();
    let js = jetstream::new(client);
    let consumer = Consumer::new(
        fx.db.store(),
        js.clone(),
        fx.config.clone(),
        vec![fx.reaction.clone()],
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!task.is_finished());

    server.restart();
    let id = Uuid::now_v7();
    let subject = format!("{}.thing-1.Happened", fx.config.subject_prefix);
    eventually(Duration::from_secs(30), "the event is published", || {
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            let payload = Bytes::from(json!({ "version": 1 }).to_string());
            match js
                .publish_with_headers(subject, headers(id, "thing-1", 1), payload)
                .await
            {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    eventually(Duration::from_secs(30), "the event is handled", || async {
        handled_count(&fx.db.pool).await == 1
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn two_replicas_apply_a_long_out_of_order_stream_in_order_without_dead_letters() {
    let mut fx = Fixture::new().await;
    // Few deliveries: nak'ing early messages until their predecessor came would use them up.
    fx.config.max_deliver = 3;
    let ids: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
    let (first, second) = (fx.start(), fx.start());
    for (i, id) in ids.iter().enumerate().skip(1) {
        fx.publish_event(*id, "thing-1", i as i64 + 1).await;
    }
    // Longer than three nak delays: the successors wait parked, not redelivered.
    tokio::time::sleep(Duration::from_secs(4)).await;
    fx.publish_event(ids[0], "thing-1", 1).await;

    eventually(Duration::from_secs(20), "all 40 are handled", || async {
        handled_count(&fx.db.pool).await == 40
    })
    .await;
    fx.drained().await;
    assert_eq!(first.stop().await + second.stop().await, 0);
    assert!(fx.dead_letters().await.is_empty());
    let versions: Vec<i64> = fx.handled().await.into_iter().map(|h| h.2).collect();
    assert_eq!(versions, (1..=40).collect::<Vec<i64>>());
}
