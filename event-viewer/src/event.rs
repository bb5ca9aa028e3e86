//! An event as the viewer shows it, read from a relay's NATS message. Decoding is tolerant:
//! whatever arrives on a service's subjects is shown (a message that is not a well-formed
//! event, such as a poison message, is marked `malformed` with the reason), and nothing on the
//! wire can make the viewer fail.

use async_nats::HeaderMap;
use serde::Serialize;
use serde_json::Value;

/// Header names the relay sets (event-store's `cloudevents::headers`, and the release before
/// CloudEvents' `envelope::headers`; the viewer does not link the store, it reads the wire like
/// any other subscriber). Each field is `[CloudEvents header, old header]`: the first present
/// is read.
pub mod headers {
    pub const MESSAGE_ID: &str = "Nats-Msg-Id";
    pub const EVENT_ID: [&str; 2] = ["ce-id", "Es-Event-Id"];
    pub const REPUBLISHED: [&str; 2] = ["ce-republished", "Es-Republished"];
    /// The CloudEvents `type` is `eventsourced.<service>.<EventType>`: its last part is shown.
    pub const EVENT_TYPE: [&str; 2] = ["ce-type", "Es-Event-Type"];
    pub const STREAM_ID: [&str; 2] = ["ce-subject", "Es-Stream-Id"];
    pub const STREAM_VERSION: [&str; 2] = ["ce-streamversion", "Es-Stream-Version"];
    pub const POSITION: [&str; 2] = ["ce-position", "Es-Position"];
    pub const CORRELATION_ID: [&str; 2] = ["ce-correlationid", "Es-Correlation-Id"];
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewedEvent {
    /// `orders` or `products`.
    pub service: &'static str,
    /// The JetStream stream sequence of the message.
    pub seq: u64,
    /// The event id (`ce-id`, else `Es-Event-Id`, else `Nats-Msg-Id`), or `<service>-seq-<seq>` when the
    /// message has none.
    pub event_id: String,
    /// Why the event was sent again, when it is a repair of a broker that lost it.
    pub republished: Option<String>,
    pub event_type: String,
    pub stream_id: String,
    /// 0 when the message does not say.
    pub stream_version: i64,
    /// The global position in the service's store; 0 when the message does not say.
    pub position: i64,
    pub correlation_id: Option<String>,
    /// When JetStream stored the message, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The `order_id` in the payload, which ties an event to an order's saga.
    pub order_id: Option<String>,
    /// The payload; `null` when it is not JSON.
    pub payload: Value,
    /// Why the message is not a well-formed event, if it is not.
    pub malformed: Option<String>,
}

/// A message as received: what [`decode`] needs, so it can be tested without a server.
pub struct RawMessage<'a> {
    pub service: &'static str,
    pub subject_prefix: &'a str,
    pub subject: &'a str,
    pub headers: Option<&'a HeaderMap>,
    pub payload: &'a [u8],
    pub seq: u64,
    pub time_ms: i64,
}

pub fn decode(raw: &RawMessage<'_>) -> ViewedEvent {
    let get = |name: &str| {
        raw.headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
    };
    // CloudEvents values are percent-encoded (the NATS binding); shown decoded where they can be.
    let header = |[cloud, old]: [&str; 2]| match get(cloud) {
        Some(v) => Some(
            percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_or_else(|_| v.to_owned(), |d| d.into_owned()),
        ),
        None => get(old).map(str::to_owned),
    };
    let mut problems = Vec::new();
    // Subjects are `<prefix>.<stream id>.<event type>`: the fallback when headers are missing.
    let (subject_stream, subject_type) = raw
        .subject
        .strip_prefix(raw.subject_prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.split_once('.'))
        .map_or((None, None), |(s, t)| {
            (Some(s.to_owned()), Some(t.to_owned()))
        });
    let mut required = |names: [&str; 2], fallback: Option<String>| {
        header(names).or(fallback).unwrap_or_else(|| {
            problems.push(format!("no {}", names[0]));
            "?".to_owned()
        })
    };
    let event_type = match get(headers::EVENT_TYPE[0]) {
        Some(ce_type) => ce_type.rsplit('.').next().unwrap_or(ce_type).to_owned(),
        None => required(headers::EVENT_TYPE, subject_type),
    };
    let stream_id = required(headers::STREAM_ID, subject_stream);
    let event_id = header(headers::EVENT_ID)
        .or_else(|| get(headers::MESSAGE_ID).map(str::to_owned))
        .unwrap_or_else(|| format!("{}-seq-{}", raw.service, raw.seq));
    let mut number = |names: [&str; 2]| match header(names).map(|v| v.parse::<i64>()) {
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            problems.push(format!("{} is not a number", names[0]));
            0
        }
        None => {
            problems.push(format!("no {}", names[0]));
            0
        }
    };
    let stream_version = number(headers::STREAM_VERSION);
    let position = number(headers::POSITION);
    let payload = match serde_json::from_slice::<Value>(raw.payload) {
        Ok(value) => value,
        Err(e) => {
            problems.push(format!("the payload is not JSON: {e}"));
            Value::Null
        }
    };
    let order_id = payload
        .get("order_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    ViewedEvent {
        service: raw.service,
        seq: raw.seq,
        event_id,
        republished: header(headers::REPUBLISHED),
        event_type,
        stream_id,
        stream_version,
        position,
        correlation_id: header(headers::CORRELATION_ID),
        time_ms: raw.time_ms,
        order_id,
        payload,
        malformed: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(
        headers: Option<&'a HeaderMap>,
        subject: &'a str,
        payload: &'a [u8],
    ) -> RawMessage<'a> {
        RawMessage {
            service: "orders",
            subject_prefix: "shop.order.events",
            subject,
            headers,
            payload,
            seq: 7,
            time_ms: 1_000,
        }
    }

    #[test]
    fn a_relayed_event_is_read_from_its_headers_and_payload() {
        // A CloudEvent, and a message of the release before CloudEvents.
        let mut cloud = HeaderMap::new();
        cloud.insert(headers::MESSAGE_ID, "e-1");
        cloud.insert("ce-id", "e-1");
        cloud.insert("ce-type", "eventsourced.order-service.OrderPlaced");
        cloud.insert("ce-subject", "order-1");
        cloud.insert("ce-streamversion", "1");
        cloud.insert("ce-position", "42");
        cloud.insert("ce-correlationid", "req%209");
        let mut old = HeaderMap::new();
        old.insert(headers::MESSAGE_ID, "e-1");
        old.insert("Es-Event-Type", "OrderPlaced");
        old.insert("Es-Stream-Id", "order-1");
        old.insert("Es-Stream-Version", "1");
        old.insert("Es-Position", "42");
        old.insert("Es-Correlation-Id", "req 9");
        for h in [cloud, old] {
            let event = decode(&raw(
                Some(&h),
                "shop.order.events.order-1.OrderPlaced",
                br#"{"order_id":"1","total_cents":5}"#,
            ));
            assert_eq!(event.event_id, "e-1");
            assert_eq!(event.event_type, "OrderPlaced");
            assert_eq!(event.stream_id, "order-1");
            assert_eq!((event.stream_version, event.position), (1, 42));
            assert_eq!(event.correlation_id.as_deref(), Some("req 9"));
            assert_eq!(event.order_id.as_deref(), Some("1"));
            assert_eq!(event.malformed, None);
        }
    }

    #[test]
    fn a_poison_message_is_shown_as_malformed_with_what_its_subject_says() {
        let mut h = HeaderMap::new();
        h.insert(headers::MESSAGE_ID, "poison-1");
        let event = decode(&raw(
            Some(&h),
            "shop.order.events.order-x.OrderPlaced",
            b"{not json",
        ));
        assert_eq!(event.event_type, "OrderPlaced");
        assert_eq!(event.stream_id, "order-x");
        assert_eq!(event.payload, Value::Null);
        let why = event.malformed.expect("malformed");
        assert!(why.contains("not JSON"), "{why}");
        assert!(why.contains("no ce-streamversion"), "{why}");
    }

    #[test]
    fn a_message_with_nothing_usable_still_decodes() {
        let event = decode(&raw(None, "elsewhere", b"\xff"));
        assert_eq!(event.event_id, "orders-seq-7");
        assert_eq!(event.event_type, "?");
        assert!(event.malformed.is_some());
    }
}
