//! The NATS message contract between a service's relay and the other service's consumer: an
//! event's payload is the message body, everything else travels in headers, and
//! `Nats-Msg-Id` is the event id (JetStream drops a re-published duplicate inside its window).
//! [`encode`] is what the relay sends, [`decode`] what a consumer accepts; a message that does
//! not decode is poison.
//!
//! An event sent again to repair a broker that lost it ([`crate::repair`]) carries the same
//! event id in `Es-Event-Id` but a `Nats-Msg-Id` of its own ([`republished_msg_id`]): JetStream
//! remembers message ids it has since lost (a deleted or purged message), and would drop the
//! repair as a duplicate. The consumers' inboxes recognise the event id forever.

use async_nats::HeaderMap;
use uuid::Uuid;

use crate::{validate, Metadata, RecordedEvent};

/// Headers every published event carries besides `Nats-Msg-Id`.
pub mod headers {
    /// The event id. `Nats-Msg-Id` is the same for a first publication; a repair's differs.
    pub const EVENT_ID: &str = "Es-Event-Id";
    /// Set on an event sent again to repair the broker, saying why (`tail`, `stream`, `range`,
    /// `operator`).
    pub const REPUBLISHED: &str = "Es-Republished";
    pub const EVENT_TYPE: &str = "Es-Event-Type";
    pub const STREAM_ID: &str = "Es-Stream-Id";
    pub const STREAM_VERSION: &str = "Es-Stream-Version";
    pub const POSITION: &str = "Es-Position";
    pub const SCHEMA_VERSION: &str = "Es-Schema-Version";
    pub const CORRELATION_ID: &str = "Es-Correlation-Id";
    pub const CAUSATION_ID: &str = "Es-Causation-Id";
    pub const TRACEPARENT: &str = "traceparent";
    /// The whole metadata object as JSON.
    pub const METADATA: &str = "Es-Metadata";
}

/// An event of the other service, as received (and as recorded in the inbox).
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub stream_id: String,
    pub stream_version: i64,
    /// The event's global position in the other service's store.
    pub source_position: i64,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: Metadata,
}

/// The headers carried by an event's message, so consumers need not parse the payload to route.
pub fn event_headers(event: &RecordedEvent) -> anyhow::Result<HeaderMap> {
    let mut h = HeaderMap::new();
    h.insert(headers::EVENT_ID, event.event_id.to_string());
    h.insert(headers::EVENT_TYPE, event.event_type.as_str());
    h.insert(headers::STREAM_ID, event.stream_id.as_str());
    h.insert(headers::STREAM_VERSION, event.stream_version.to_string());
    h.insert(headers::POSITION, event.position.to_string());
    h.insert(headers::SCHEMA_VERSION, event.schema_version.to_string());
    h.insert(headers::METADATA, serde_json::to_string(&event.metadata)?);
    if let Some(id) = &event.metadata.correlation_id {
        h.insert(headers::CORRELATION_ID, id.as_str());
    }
    if let Some(id) = &event.metadata.causation_id {
        h.insert(headers::CAUSATION_ID, id.as_str());
    }
    if let Some(tp) = &event.metadata.traceparent {
        h.insert(headers::TRACEPARENT, tp.as_str());
    }
    Ok(h)
}

/// An event as the relay publishes it: headers and body. `Nats-Msg-Id` is set by the
/// publisher from [`RecordedEvent::event_id`].
pub fn encode(event: &RecordedEvent) -> anyhow::Result<(HeaderMap, bytes::Bytes)> {
    Ok((
        event_headers(event)?,
        serde_json::to_vec(&event.payload)?.into(),
    ))
}

/// The `Nats-Msg-Id` of `event` sent again in repair `generation` (a number unique to the
/// repair, so JetStream de-duplicates within one repair but not against the lost original).
pub fn republished_msg_id(event: &RecordedEvent, generation: u64) -> String {
    format!("{}.r{generation}", event.event_id)
}

/// Reads a message as published by the other service's relay; any error makes it poison.
pub fn decode(message: &async_nats::Message) -> Result<ForeignEvent, String> {
    decode_parts(message.headers.as_ref(), &message.payload)
}

fn decode_parts(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<ForeignEvent, String> {
    let h = headers.ok_or_else(|| "the message has no headers".to_owned())?;
    let required = |name: &str| {
        h.get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("header {name} is missing"))
    };
    let number = |name: &str| -> Result<i64, String> {
        let value = required(name)?;
        value
            .parse()
            .map_err(|_| format!("header {name} is not a number: {value:?}"))
    };
    // Publishers before `Es-Event-Id` sent the event id only as `Nats-Msg-Id`.
    let (name, id) = match required(headers::EVENT_ID) {
        Ok(id) => (headers::EVENT_ID, id),
        Err(_) => {
            let name = async_nats::header::NATS_MESSAGE_ID.as_ref();
            (name, required(name)?)
        }
    };
    let event_id = Uuid::parse_str(id).map_err(|e| format!("{name} {id:?} is not a uuid: {e}"))?;
    let stream_version = number(headers::STREAM_VERSION)?;
    if stream_version < 1 {
        return Err(format!(
            "{} must be 1 or more, not {stream_version}",
            headers::STREAM_VERSION
        ));
    }
    let schema_version = match h.get(headers::SCHEMA_VERSION) {
        None => 1,
        Some(v) => v.as_str().parse().map_err(|_| {
            format!(
                "header {} is not a number: {:?}",
                headers::SCHEMA_VERSION,
                v.as_str()
            )
        })?,
    };
    let metadata = match h.get(headers::METADATA) {
        None => Metadata::default(),
        Some(v) => serde_json::from_str(v.as_str())
            .map_err(|e| format!("header {} is not metadata JSON: {e}", headers::METADATA))?,
    };
    let payload: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let event = ForeignEvent {
        event_id,
        event_type: required(headers::EVENT_TYPE)?.to_owned(),
        stream_id: required(headers::STREAM_ID)?.to_owned(),
        stream_version,
        source_position: number(headers::POSITION)?,
        schema_version,
        payload,
        metadata,
    };
    // Postgres text and jsonb cannot hold NUL: such an event could never be recorded.
    let metadata = serde_json::to_value(&event.metadata).unwrap_or_default();
    if [&event.event_type, &event.stream_id]
        .iter()
        .any(|s| validate::text_has_nul(s))
        || validate::json_has_nul(&event.payload)
        || validate::json_has_nul(&metadata)
    {
        return Err("the event contains a NUL character, which Postgres cannot store".to_owned());
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn recorded() -> RecordedEvent {
        RecordedEvent {
            position: (42 << 20) + 1,
            stream_id: "product-1".to_owned(),
            stream_version: 3,
            event_id: Uuid::now_v7(),
            event_type: "PriceChanged".to_owned(),
            schema_version: 2,
            payload: json!({ "price_cents": 1200 }),
            metadata: Metadata {
                correlation_id: Some("req-7".to_owned()),
                causation_id: Some("cause".to_owned()),
                traceparent: None,
                idempotency_key: None,
            },
            recorded_at: chrono::Utc::now(),
        }
    }

    /// What a publisher adds: the message id.
    fn published(event: &RecordedEvent) -> (HeaderMap, bytes::Bytes) {
        let (mut headers, body) = encode(event).unwrap();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            event.event_id.to_string().as_str(),
        );
        (headers, body)
    }

    #[test]
    fn what_the_relay_encodes_a_consumer_decodes_unchanged() {
        let event = recorded();
        let (headers, body) = published(&event);
        let decoded = decode_parts(Some(&headers), &body).unwrap();
        assert_eq!(
            decoded,
            ForeignEvent {
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                stream_id: event.stream_id.clone(),
                stream_version: 3,
                source_position: event.position,
                schema_version: 2,
                payload: event.payload.clone(),
                metadata: event.metadata.clone(),
            }
        );
        assert_eq!(
            headers.get(headers::CORRELATION_ID).unwrap().as_str(),
            "req-7"
        );
    }

    #[test]
    fn a_message_missing_what_a_consumer_needs_is_refused_naming_it() {
        let event = recorded();
        let cases: [(&[&str], &str); 5] = [
            (&["Nats-Msg-Id", headers::EVENT_ID], "Nats-Msg-Id"),
            (&[headers::STREAM_ID], headers::STREAM_ID),
            (&[headers::EVENT_TYPE], headers::EVENT_TYPE),
            (&[headers::STREAM_VERSION], headers::STREAM_VERSION),
            (&[headers::POSITION], headers::POSITION),
        ];
        for (omit, named) in cases {
            let (all, body) = published(&event);
            let mut kept = HeaderMap::new();
            for (name, values) in all.iter() {
                if !omit.contains(&name.to_string().as_str()) {
                    kept.insert(name.clone(), values[0].clone());
                }
            }
            let error = decode_parts(Some(&kept), &body).unwrap_err();
            assert!(error.contains(named), "{omit:?}: {error}");
        }
        assert!(decode_parts(None, b"{}")
            .unwrap_err()
            .contains("no headers"));
    }

    #[test]
    fn malformed_values_are_refused() {
        let event = recorded();
        let (headers, _) = published(&event);
        assert!(decode_parts(Some(&headers), b"{ nope")
            .unwrap_err()
            .contains("not JSON"));
        let mut bad = headers.clone();
        bad.insert(headers::STREAM_VERSION, "0");
        assert!(decode_parts(Some(&bad), b"{}")
            .unwrap_err()
            .contains("1 or more"));
        let mut bad = headers.clone();
        bad.insert(headers::EVENT_ID, "not-a-uuid");
        assert!(decode_parts(Some(&bad), b"{}")
            .unwrap_err()
            .contains("not a uuid"));
        let mut bad = headers.clone();
        bad.insert(headers::METADATA, "[1");
        assert!(decode_parts(Some(&bad), b"{}")
            .unwrap_err()
            .contains("metadata"));
    }

    #[test]
    fn a_repair_carries_the_event_id_apart_from_its_message_id() {
        let event = recorded();
        let (mut republished, body) = published(&event);
        republished.insert(
            async_nats::header::NATS_MESSAGE_ID,
            republished_msg_id(&event, 7).as_str(),
        );
        let decoded = decode_parts(Some(&republished), &body).unwrap();
        assert_eq!(decoded.event_id, event.event_id);
        // An older publisher's message: the event id only as `Nats-Msg-Id`.
        let (all, body) = published(&event);
        let mut older = HeaderMap::new();
        for (name, values) in all.iter() {
            if name.to_string() != headers::EVENT_ID {
                older.insert(name.clone(), values[0].clone());
            }
        }
        assert_eq!(
            decode_parts(Some(&older), &body).unwrap().event_id,
            event.event_id
        );
    }

    #[test]
    fn a_nul_character_anywhere_makes_the_event_poison() {
        let event = recorded();
        let (headers, _) = published(&event);
        let body = json!({ "nested": ["a\u{0}b"] }).to_string();
        assert!(decode_parts(Some(&headers), body.as_bytes())
            .unwrap_err()
            .contains("NUL"));
    }

    #[test]
    fn a_missing_schema_version_or_metadata_has_its_default() {
        let event = recorded();
        let (all, body) = published(&event);
        let mut kept = HeaderMap::new();
        for (name, values) in all.iter() {
            let name_text = name.to_string();
            if name_text != headers::SCHEMA_VERSION && name_text != headers::METADATA {
                kept.insert(name.clone(), values[0].clone());
            }
        }
        let decoded = decode_parts(Some(&kept), &body).unwrap();
        assert_eq!(decoded.schema_version, 1);
        assert_eq!(decoded.metadata, Metadata::default());
    }
}
