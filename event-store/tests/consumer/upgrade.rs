//! A rolling upgrade to CloudEvents, one service at a time: the consumer reads one stream whose
//! messages come from a relay of the release before (its headers only), then from this
//! release's relay (both header sets, the default), then from one that stopped sending the old
//! headers; a repair of an already recorded event arrives in the new form. Every event is
//! handled once, in stream order, with its metadata, and nothing is dead-lettered.

use std::time::Duration;

use async_nats::HeaderMap;
use event_store::envelope::{self, Producer};
use event_store::testing::read_inbox;
use event_store::{Metadata, RecordedEvent};
use serde_json::json;
use uuid::Uuid;

use crate::fixture::*;

fn event(version: i64) -> RecordedEvent {
    RecordedEvent {
        position: (100 + version) << 20,
        stream_id: "thing-1".to_owned(),
        stream_version: version,
        event_id: Uuid::now_v7(),
        event_type: "Happened".to_owned(),
        schema_version: 1,
        payload: json!({ "version": version }),
        metadata: Metadata {
            correlation_id: Some(format!("req {version} ü")),
            causation_id: Some("cause".to_owned()),
            traceparent: None,
            idempotency_key: Some(format!("key-{version}")),
        },
        recorded_at: chrono::Utc::now(),
    }
}

/// The message a relay with `producer` sends for `event`, keeping only the headers `keep`
/// allows, as published (with its message id).
fn message(
    producer: &Producer,
    event: &RecordedEvent,
    keep: impl Fn(&str) -> bool,
) -> (HeaderMap, bytes::Bytes) {
    let (all, body) = envelope::encode(producer, event, None).unwrap();
    let mut h = HeaderMap::new();
    for (name, values) in all.iter() {
        if keep(name.as_ref()) {
            h.insert(name.clone(), values[0].clone());
        }
    }
    h.insert("Nats-Msg-Id", event.event_id.to_string().as_str());
    (h, body)
}

#[tokio::test]
async fn a_rolling_upgrade_mixes_old_both_and_cloudevents_only_messages_without_loss() {
    let fx = Fixture::new().await;
    let running = fx.start();
    let events: Vec<RecordedEvent> = (1..=6).map(event).collect();
    let both = Producer::new("producer-service");
    let cloud_only = Producer {
        legacy_headers: false,
        ..both.clone()
    };
    // Versions 1-2: the previous release's relay (the old headers only); 3-4: this release's
    // default (both sets); 5-6: CloudEvents only. Sent out of order across the switch (4
    // before 3), so the consumer's ordering works across the forms too.
    let old = |n: &str| !n.starts_with("ce-");
    let new = |n: &str| !n.starts_with("Es-");
    let sends = [
        (message(&both, &events[0], old), (false, true)),
        (message(&both, &events[1], old), (false, true)),
        (message(&both, &events[3], |_| true), (true, true)),
        (message(&both, &events[2], |_| true), (true, true)),
        (message(&cloud_only, &events[4], new), (true, false)),
        (message(&cloud_only, &events[5], new), (true, false)),
    ];
    for ((headers, body), form) in sends {
        let has_ce = headers.get("ce-specversion").is_some();
        let has_old = headers.get("Es-Event-Type").is_some();
        assert_eq!((has_ce, has_old), form);
        fx.publish("thing-1", headers, body).await;
    }
    // A repair of version 2, sent again by the new relay under a message id of its own.
    let (mut repair, body) = envelope::encode(&cloud_only, &events[1], Some("stream")).unwrap();
    let repair_id = envelope::republished_msg_id(&events[1], 1);
    repair.insert("Nats-Msg-Id", repair_id.as_str());
    assert!(
        !fx.publish("thing-1", repair, body).await,
        "JetStream keeps the repair"
    );

    eventually(
        Duration::from_secs(15),
        "six events are handled",
        || async { handled_count(&fx.db.pool).await == 6 },
    )
    .await;
    fx.drained().await;
    assert_eq!(running.stop().await, 0, "nothing dead-lettered");
    let handled = fx.handled().await;
    let expected: Vec<_> = events
        .iter()
        .map(|e| (e.event_id, e.stream_id.clone(), e.stream_version))
        .collect();
    assert_eq!(handled, expected, "each once, in stream order");
    let inbox = read_inbox(&fx.db.pool, 0, 100).await.unwrap();
    for (_, recorded) in &inbox {
        let sent = events
            .iter()
            .find(|e| e.event_id == recorded.event_id)
            .unwrap();
        assert_eq!(recorded.metadata, sent.metadata, "v{}", sent.stream_version);
        assert_eq!(recorded.source_position, sent.position);
        assert_eq!(recorded.event_type, "Happened");
        assert_eq!(recorded.payload, sent.payload);
    }
}
