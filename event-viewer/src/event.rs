//! An event as the viewer shows it, read from a relay's NATS message. Decoding is tolerant:
//! whatever arrives on a service's subjects is shown (a message that is not a well-formed
//! event, such as a poison message, is marked `malformed` with the reason), and nothing on the
//! wire can make the viewer fail.

use async_nats::HeaderMap;
use serde::Serialize;
use serde_json::Value;

/// Header names the relay sets (event-store's `envelope::headers`; the viewer does not link
/// the store, it reads the wire like any other subscriber).
pub mod headers {
    pub const MESSAGE_ID: &str = "Nats-Msg-Id";
    pub const EVENT_ID: &str = "Es-Event-Id";
    pub const REPUBLISHED: &str = "Es-Republished";
    pub const EVENT_TYPE: &str = "Es-Event-Type";
    pub const STREAM_ID: &str = "Es-Stream-Id";
    pub const STREAM_VERSION: &str = "Es-Stream-Version";
    pub const POSITION: &str = "Es-Position";
    pub const CORRELATION_ID: &str = "Es-Correlation-Id";
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViewedEvent {
    /// `orders` or `products`.
    pub service: &'static str,
    /// The JetStream stream sequence of the message.
    pub seq: u64,
    /// The event id (`Es-Event-Id`, else `Nats-Msg-Id`), or `<service>-seq-<seq>` when the
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
    let header = |name: &str| {
        raw.headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
            .filter(|v| !v.is_empty())
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
    let mut required = |name: &str, fallback: Option<String>| {
        header(name).or(fallback).unwrap_or_else(|| {
            problems.push(format!("no {name}"));
            "?".to_owned()
        })
    };
    let event_type = required(headers::EVENT_TYPE, subject_type);
    let stream_id = required(headers::STREAM_ID, subject_stream);
    let event_id = header(headers::EVENT_ID)
        .or_else(|| header(headers::MESSAGE_ID))
        .unwrap_or_else(|| format!("{}-seq-{}", raw.service, raw.seq));
    let mut number = |name: &str| match header(name).map(|v| v.parse::<i64>()) {
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            problems.push(format!("{name} is not a number"));
            0
        }
        None => {
            problems.push(format!("no {name}"));
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
        let mut h = HeaderMap::new();
        h.insert(headers::MESSAGE_ID, "e-1");
        h.insert(headers::EVENT_TYPE, "OrderPlaced");
        h.insert(headers::STREAM_ID, "order-1");
        h.insert(headers::STREAM_VERSION, "1");
        h.insert(headers::POSITION, "42");
        h.insert(headers::CORRELATION_ID, "req-9");
        let event = decode(&raw(
            Some(&h),
            "shop.order.events.order-1.OrderPlaced",
            br#"{"order_id":"1","total_cents":5}"#,
        ));
        assert_eq!(event.event_id, "e-1");
        assert_eq!(event.event_type, "OrderPlaced");
        assert_eq!(event.stream_id, "order-1");
        assert_eq!((event.stream_version, event.position), (1, 42));
        assert_eq!(event.correlation_id.as_deref(), Some("req-9"));
        assert_eq!(event.order_id.as_deref(), Some("1"));
        assert_eq!(event.malformed, None);
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
        assert!(why.contains("no Es-Stream-Version"), "{why}");
    }

    #[test]
    fn a_message_with_nothing_usable_still_decodes() {
        let event = decode(&raw(None, "elsewhere", b"\xff"));
        assert_eq!(event.event_id, "orders-seq-7");
        assert_eq!(event.event_type, "?");
        assert!(event.malformed.is_some());
    }
}
