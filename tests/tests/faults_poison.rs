//! Poison messages on the subjects the running services consume: each one that cannot be
//! decoded or applied is dead-lettered exactly once (recorded in `dead_letters`, published on
//! `<namespace>.deadletter.<service>` with its error, counted in `es_dead_letters_total` at
//! `/metrics`), and the valid events behind it are still processed: orders placed after the
//! poison confirm.
//!
//! What the test found, and relies on:
//! - An unknown event type with a JSON payload is not poison: readers tolerate event types
//!   added later, so it is recorded in the inbox, acknowledged, and has no effect.
//! - Poison uses stream ids of its own. Per-stream order is gated on the inbox's versions, so
//!   a message that decodes and claims a real stream's next version is indistinguishable from
//!   the real event: it is recorded in its place, and the real one is then skipped as "a
//!   different event id for an already recorded stream version". One that claims a later
//!   version waits (parked, then nak'd) until its deliveries run out and is dead-lettered. Only messages
//!   that fail to decode, or that a handler refuses, leave a real stream untouched (they are
//!   never recorded). Who may publish on these subjects is therefore NATS's permissions' job.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use event_store::envelope::headers;
use event_store::testing::unique;
use futures::StreamExt;
use serde_json::json;
use sqlx::PgPool;
use tests::faults::{check_consistent, create_products, Fault, Verdict};
use tests::{TestSystem, SETTLE};
use uuid::Uuid;

/// One bad message, told apart from the others by its payload, which names it.
struct Poison {
    case: &'static str,
    headers: Option<HeaderMap>,
    payload: String,
    /// Part of the error it must be dead-lettered with; None: tolerated, not poison.
    error: Option<&'static str>,
}

/// The bad messages for a consumer whose known event type `known_type` has required fields.
fn poisons(service: &str, known_type: &str) -> Vec<Poison> {
    let headers = |event_type: &str, omit: Option<&str>| {
        let mut h = HeaderMap::new();
        let id = Uuid::new_v4().to_string();
        let stream = format!("poison-{}", Uuid::new_v4());
        for (name, value) in [
            ("Nats-Msg-Id", id.as_str()),
            (headers::EVENT_TYPE, event_type),
            (headers::STREAM_ID, stream.as_str()),
            (headers::STREAM_VERSION, "1"),
            (headers::POSITION, "1"),
        ] {
            if Some(name) != omit {
                h.insert(name, value);
            }
        }
        Some(h)
    };
    let named = |case: &str| json!({ "poison": format!("{service}/{case}") }).to_string();
    vec![
        Poison {
            case: "not_json",
            headers: headers(known_type, None),
            payload: format!("{{not json: {service}/not_json"),
            error: Some("not JSON"),
        },
        Poison {
            case: "missing_fields",
            headers: headers(known_type, None),
            payload: named("missing_fields"),
            error: Some("missing field"),
        },
        Poison {
            case: "missing_version_header",
            headers: headers(known_type, Some(headers::STREAM_VERSION)),
            payload: named("missing_version_header"),
            error: Some("header Es-Stream-Version is missing"),
        },
        Poison {
            case: "missing_message_id",
            headers: headers(known_type, Some("Nats-Msg-Id")),
            payload: named("missing_message_id"),
            error: Some("header Nats-Msg-Id is missing"),
        },
        Poison {
            case: "no_headers",
            headers: None,
            payload: named("no_headers"),
            error: Some("no headers"),
        },
        Poison {
            case: "unknown_type",
            headers: headers("GiftWrapped", None),
            payload: named("unknown_type"),
            error: None,
        },
    ]
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_once_and_the_events_behind_them_still_apply() {
    let system = TestSystem::start().await;
    let nats = event_store::testing::connect_nats().await;
    let js = async_nats::jetstream::new(nats.clone());
    let ns = &system.namespace;
    let mut dead_letters = nats
        .subscribe(format!("{ns}.deadletter.>"))
        .await
        .expect("subscribing to the dead-letter subjects");
    // Consumer -> (its stream, its subjects, its known event type).
    let targets = [
        ("order-service", "product", "ProductCreated"),
        ("product-service", "order", "OrderPlaced"),
    ];
    let mut published = Vec::new();
    for (service, source, known_type) in targets {
        let (stream, prefix) = (
            format!("{ns}_{source}_events"),
            format!("{ns}.{source}.events"),
        );
        event_store::nats::ensure_stream(&js, &stream, &prefix)
            .await
            .expect("the service's source stream");
        for poison in poisons(service, known_type) {
            let subject = format!("{prefix}.poison.{}", poison.case);
            let payload = poison.payload.clone().into();
            let sent = match poison.headers.clone() {
                Some(h) => js.publish_with_headers(subject, h, payload).await,
                None => js.publish(subject, payload).await,
            };
            sent.expect("publishing").await.expect("JetStream's ack");
            published.push((service, poison));
        }
    }
    let ended = Instant::now();

    // Valid events behind the poison: products created, orders placed, all settle.
    let products = create_products(&system, 2).await;
    let customer = unique("poison");
    let mut acknowledged = Vec::new();
    for i in 0..6 {
        let (status, body) = system
            .post(
                format!("{}/orders", system.orders.base_url),
                json!({ "customer_id": customer,
                        "lines": [{ "product_id": products[i % 2], "quantity": 1 }] }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        acknowledged.push(body["id"].as_str().expect("order id").to_owned());
    }
    let mut verdict = check_consistent(&system, &products, &customer, &acknowledged).await;
    for id in &acknowledged {
        let order = system.settled_order(id).await;
        if order["status"] != "confirmed" {
            verdict
                .problems
                .push(format!("order {id} was not confirmed: {order}"));
        }
    }

    // Every poison on its consumer's dead-letter subject, with its error.
    let expected = published.iter().filter(|(_, p)| p.error.is_some()).count();
    let mut received: HashMap<String, Vec<async_nats::Message>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while received.values().map(Vec::len).sum::<usize>() < expected {
        match tokio::time::timeout_at(deadline, dead_letters.next()).await {
            Ok(Some(message)) => {
                let payload = String::from_utf8_lossy(&message.payload).into_owned();
                received.entry(payload).or_default().push(message);
            }
            _ => break,
        }
    }
    // Nothing else arrives late, which would mean a poison dead-lettered twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(10), dead_letters.next()).await
    {
        let payload = String::from_utf8_lossy(&message.payload).into_owned();
        received.entry(payload).or_default().push(message);
    }
    for (service, poison) in &published {
        let copies = received.remove(&poison.payload).unwrap_or_default();
        check_dead_letter(service, poison, &copies, ns, &mut verdict);
    }
    for (payload, messages) in &received {
        verdict.problems.push(format!(
            "{} unexpected dead letters: {payload}",
            messages.len()
        ));
    }

    // ... and counted in each service's dead_letters table, or, if tolerated, in its inbox.
    for (service, db) in [
        ("order-service", &system.orders_db.pool),
        ("product-service", &system.products_db.pool),
    ] {
        let ours = published.iter().filter(|(s, _)| *s == service);
        for (_, poison) in ours {
            check_recorded(service, poison, db, &mut verdict).await;
        }
    }
    // ... and in each service's Prometheus counter.
    for service in [&system.orders, &system.products] {
        let expected = published
            .iter()
            .filter(|(s, p)| *s == service.name && p.error.is_some())
            .count();
        let counted = dead_letter_metric(&system, &service.base_url, service.name).await;
        if counted != Some(expected as f64) {
            verdict.problems.push(format!(
                "{} counts {counted:?} dead letters at /metrics, expected {expected}",
                service.name
            ));
        }
    }
    // The histories: every real event recorded once and in order. The poison was published by
    // this test, not by a producer's relay: the ids it carried are named as forged, and exactly
    // the tolerated ones (recorded, without effect) must be in each inbox.
    let forged: HashSet<Uuid> = published
        .iter()
        .filter_map(|(_, poison)| message_id(poison))
        .collect();
    verdict.check_history_and_audit(&system, &forged).await;
    for history in &verdict.history {
        let consumer = match history.direction.as_str() {
            "product->order" => "order-service",
            _ => "product-service",
        };
        let tolerated = published
            .iter()
            .filter(|(s, p)| *s == consumer && p.error.is_none())
            .count();
        if history.forged != tolerated {
            verdict.problems.push(format!(
                "{consumer}'s inbox holds {} of the test's forged events, expected the {tolerated} \
                 tolerated ones",
                history.forged
            ));
        }
    }
    verdict.report(&Fault {
        name: "poison_messages",
        injected: published.len(),
        ended,
    });
}

fn check_dead_letter(
    service: &str,
    poison: &Poison,
    copies: &[async_nats::Message],
    ns: &str,
    verdict: &mut Verdict,
) {
    let case = format!("{service}/{}", poison.case);
    let Some(expected_error) = poison.error else {
        if !copies.is_empty() {
            verdict
                .problems
                .push(format!("{case} is not poison but was dead-lettered"));
        }
        return;
    };
    let Some(first) = copies.first() else {
        verdict.lost += 1;
        verdict
            .problems
            .push(format!("{case} never reached the dead-letter subject"));
        return;
    };
    verdict.duplicates += copies.len() - 1;
    let header = |name: &str| {
        first
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    let error = header(event_store::consumer::dead_letter_headers::ERROR);
    let consumer = header(event_store::consumer::dead_letter_headers::CONSUMER);
    if first.subject.as_str() != format!("{ns}.deadletter.{service}")
        || consumer != service
        || !error.contains(expected_error)
    {
        verdict.problems.push(format!(
            "{case}: dead-lettered on {} by {consumer:?} with error {error:?}, \
             expected one containing {expected_error:?}",
            first.subject
        ));
    }
}

async fn check_recorded(service: &str, poison: &Poison, db: &PgPool, verdict: &mut Verdict) {
    let case = format!("{service}/{}", poison.case);
    let errors: Vec<String> =
        sqlx::query_scalar("SELECT error FROM dead_letters WHERE consumer = $1 AND payload = $2")
            .bind(service)
            .bind(poison.payload.as_bytes())
            .fetch_all(db)
            .await
            .expect("reading dead_letters");
    match poison.error {
        Some(expected) => {
            if errors.len() > 1 {
                verdict.duplicates += errors.len() - 1;
            }
            if !errors.iter().any(|e| e.contains(expected)) {
                verdict.problems.push(format!(
                    "{case}: dead_letters holds {errors:?}, expected an error with {expected:?}"
                ));
            }
        }
        None => {
            let id = message_id(poison);
            let in_inbox: i64 =
                sqlx::query_scalar("SELECT count(*) FROM inbox WHERE event_id = $1")
                    .bind(id)
                    .fetch_one(db)
                    .await
                    .expect("reading the inbox");
            if in_inbox != 1 || !errors.is_empty() {
                verdict.problems.push(format!(
                    "{case}: tolerated events belong in the inbox once ({in_inbox}), \
                     not in dead_letters ({errors:?})"
                ));
            }
        }
    }
}

/// The event id a poison message claims, if it carries one.
fn message_id(poison: &Poison) -> Option<Uuid> {
    poison
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .and_then(|v| Uuid::parse_str(v.as_str()).ok())
}

/// `es_dead_letters_total{consumer="<consumer>"}` at `<base_url>/metrics`, summed over kinds.
async fn dead_letter_metric(system: &TestSystem, base_url: &str, consumer: &str) -> Option<f64> {
    let text = system
        .http
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let label = format!("consumer=\"{consumer}\"");
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("es_dead_letters_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
