//! The NATS message contract between a service's relay and the other service's consumer:
//! every event is a CloudEvent in the binary content mode of the CloudEvents NATS binding. Its
//! payload is the message body; every attribute is a `ce-` header ([`crate::cloudevents`] names
//! them), and `Nats-Msg-Id` is the event id (JetStream drops a re-published duplicate inside
//! its window). [`encode`] is what the relay sends, [`decode`] what a consumer accepts; a
//! message that does not decode is poison.
//!
//! **The old headers, for one release.** Until this release, events travelled with headers of
//! our own (`Es-Event-Type`, `Es-Stream-Id`, ... in [`headers`]). So that the two services can
//! be upgraded one at a time, in either order, a producer sends both header sets by default
//! ([`Producer::legacy_headers`]; `EVENTS_LEGACY_HEADERS=false` stops it once every consumer
//! reads CloudEvents) and [`decode`] reads either: the `ce-` headers when `ce-specversion` is
//! present, the old ones otherwise. The next release drops the old set.
//!
//! An event sent again to repair a broker that lost it ([`crate::repair`]) keeps its event id
//! in `ce-id` but has a `Nats-Msg-Id` of its own ([`republished_msg_id`]): JetStream
//! remembers message ids it has since lost (a deleted or purged message), and would drop the
//! repair as a duplicate. The consumers' inboxes recognise the event id forever.

use async_nats::{HeaderMap, HeaderName};
use chrono::SecondsFormat;
use uuid::Uuid;

use crate::cloudevents::{self, decode_value, encode_value, headers as ce};
use crate::{validate, Metadata, RecordedEvent};

/// The headers events carried before CloudEvents, still sent beside the `ce-` headers while
/// [`Producer::legacy_headers`] is on, and still read from a producer that sends only them.
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
    /// W3C trace context, where OpenTelemetry's NATS propagation looks for it. Sent whatever
    /// the legacy setting: it is the distributed-tracing extension's secondary mapping.
    pub const TRACEPARENT: &str = "traceparent";
    /// The whole metadata object as JSON.
    pub const METADATA: &str = "Es-Metadata";
}

/// Who publishes, as the envelope names it: the service (the CloudEvents `source` and the
/// namespace of its event types), and whether the old headers go along.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    /// The producing service's name, such as `product-service`.
    pub service: String,
    /// Send the pre-CloudEvents headers too, for consumers not yet upgraded (one release).
    pub legacy_headers: bool,
}

impl Producer {
    /// `service` sending both header sets, the default of this release.
    pub fn new(service: impl Into<String>) -> Self {
        Producer {
            service: service.into(),
            legacy_headers: true,
        }
    }
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

/// The headers of an event's message, so consumers need not parse the payload to route;
/// `republished` is the reason of a repair, `None` for a first publication.
pub fn event_headers(
    producer: &Producer,
    event: &RecordedEvent,
    republished: Option<&str>,
) -> anyhow::Result<HeaderMap> {
    // Names as static `HeaderName`s (no allocation each) and owned values moved in.
    fn put(h: &mut HeaderMap, name: &'static str, value: impl Into<String>) {
        h.insert(HeaderName::from_static(name), value.into());
    }
    let mut h = HeaderMap::new();
    let service = producer.service.as_str();
    let id = event.event_id.to_string();
    put(&mut h, ce::SPECVERSION, cloudevents::SPEC_VERSION);
    put(&mut h, ce::ID, id.as_str());
    put(&mut h, ce::SOURCE, cloudevents::source(service));
    put(
        &mut h,
        ce::TYPE,
        cloudevents::event_type(service, &event.event_type),
    );
    put(&mut h, ce::SUBJECT, encode_value(&event.stream_id));
    put(
        &mut h,
        ce::TIME,
        event
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
    );
    put(&mut h, ce::DATACONTENTTYPE, cloudevents::DATA_CONTENT_TYPE);
    put(
        &mut h,
        ce::DATASCHEMA,
        cloudevents::dataschema(service, &event.event_type, event.schema_version),
    );
    let stream_version = event.stream_version.to_string();
    let position = event.position.to_string();
    let schema_version = event.schema_version.to_string();
    put(&mut h, ce::STREAM_VERSION, stream_version.as_str());
    put(&mut h, ce::POSITION, position.as_str());
    put(&mut h, ce::SCHEMA_VERSION, schema_version.as_str());
    let m = &event.metadata;
    let optional = [
        (ce::CORRELATION_ID, &m.correlation_id),
        (ce::CAUSATION_ID, &m.causation_id),
        (ce::TRACEPARENT, &m.traceparent),
        (ce::IDEMPOTENCY_KEY, &m.idempotency_key),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            put(&mut h, name, encode_value(value));
        }
    }
    if let Some(tp) = &m.traceparent {
        put(&mut h, headers::TRACEPARENT, tp.as_str());
    }
    if let Some(reason) = republished {
        put(&mut h, ce::REPUBLISHED, reason);
    }
    if producer.legacy_headers {
        put(&mut h, headers::EVENT_ID, id);
        put(&mut h, headers::EVENT_TYPE, event.event_type.as_str());
        put(&mut h, headers::STREAM_ID, event.stream_id.as_str());
        put(&mut h, headers::STREAM_VERSION, stream_version);
        put(&mut h, headers::POSITION, position);
        put(&mut h, headers::SCHEMA_VERSION, schema_version);
        put(&mut h, headers::METADATA, serde_json::to_string(m)?);
        if let Some(id) = &m.correlation_id {
            put(&mut h, headers::CORRELATION_ID, id.as_str());
        }
        if let Some(id) = &m.causation_id {
            put(&mut h, headers::CAUSATION_ID, id.as_str());
        }
        if let Some(reason) = republished {
            put(&mut h, headers::REPUBLISHED, reason);
        }
    }
    Ok(h)
}

/// An event as the relay publishes it: headers and body. `Nats-Msg-Id` is set by the
/// publisher from [`RecordedEvent::event_id`].
pub fn encode(
    producer: &Producer,
    event: &RecordedEvent,
    republished: Option<&str>,
) -> anyhow::Result<(HeaderMap, bytes::Bytes)> {
    Ok((
        event_headers(producer, event, republished)?,
        serde_json::to_vec(&event.payload)?.into(),
    ))
}

/// The `Nats-Msg-Id` of `event` sent again in repair `generation` (a number unique to the
/// repair, so JetStream de-duplicates within one repair but not against the lost original).
pub fn republished_msg_id(event: &RecordedEvent, generation: u64) -> String {
    format!("{}.r{generation}", event.event_id)
}

/// The producer's store position a published message carries, in either header set.
pub fn position_of(h: &HeaderMap) -> Option<i64> {
    h.get(ce::POSITION)
        .or_else(|| h.get(headers::POSITION))
        .and_then(|v| v.as_str().parse().ok())
}

/// Whether a published message was sent again to repair the broker, in either header set.
pub fn is_republished(h: &HeaderMap) -> bool {
    h.get(ce::REPUBLISHED).is_some() || h.get(headers::REPUBLISHED).is_some()
}

/// Reads a message as published by the other service's relay; any error makes it poison.
pub fn decode(message: &async_nats::Message) -> Result<ForeignEvent, String> {
    decode_parts(message.headers.as_ref(), &message.payload)
}

/// One header set's names for what a consumer reads.
struct Names {
    stream_id: &'static str,
    stream_version: &'static str,
    position: &'static str,
    schema_version: &'static str,
}

const CLOUDEVENTS: Names = Names {
    stream_id: ce::SUBJECT,
    stream_version: ce::STREAM_VERSION,
    position: ce::POSITION,
    schema_version: ce::SCHEMA_VERSION,
};

const LEGACY: Names = Names {
    stream_id: headers::STREAM_ID,
    stream_version: headers::STREAM_VERSION,
    position: headers::POSITION,
    schema_version: headers::SCHEMA_VERSION,
};

fn decode_parts(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<ForeignEvent, String> {
    let h = headers.ok_or_else(|| "the message has no headers".to_owned())?;
    // A CloudEvents producer's values are percent-encoded; the old headers' were sent as is.
    let cloud = h.get(ce::SPECVERSION).is_some();
    let text = |name: &str| -> Result<Option<String>, String> {
        match h.get(name).map(|v| v.as_str()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) if !cloud => Ok(Some(v.to_owned())),
            Some(v) => decode_value(v)
                .map(|v| Some(v.into_owned()))
                .map_err(|e| format!("header {name}: {e}")),
        }
    };
    let required = |name: &str| text(name)?.ok_or_else(|| format!("header {name} is missing"));
    let number = |name: &str| -> Result<i64, String> {
        let value = required(name)?;
        value
            .parse()
            .map_err(|_| format!("header {name} is not a number: {value:?}"))
    };
    let (names, event_type, event_id, metadata) = if cloud {
        let version = required(ce::SPECVERSION)?;
        if version != cloudevents::SPEC_VERSION {
            return Err(format!(
                "CloudEvents {version} is not supported (only {})",
                cloudevents::SPEC_VERSION
            ));
        }
        if let Some(content) = text(ce::DATACONTENTTYPE)? {
            let media = content.split(';').next().unwrap_or_default().trim();
            if !media.eq_ignore_ascii_case(cloudevents::DATA_CONTENT_TYPE) {
                return Err(format!("{} {content:?} is not JSON", ce::DATACONTENTTYPE));
            }
        }
        let ce_type = required(ce::TYPE)?;
        let event_type = cloudevents::stored_type(&ce_type)
            .ok_or_else(|| format!("{} {ce_type:?} is not one of ours", ce::TYPE))?
            .to_owned();
        let metadata = Metadata {
            correlation_id: text(ce::CORRELATION_ID)?,
            causation_id: text(ce::CAUSATION_ID)?,
            traceparent: text(ce::TRACEPARENT)?,
            idempotency_key: text(ce::IDEMPOTENCY_KEY)?,
        };
        (
            &CLOUDEVENTS,
            event_type,
            (ce::ID, required(ce::ID)?),
            metadata,
        )
    } else {
        // Publishers before `Es-Event-Id` sent the event id only as `Nats-Msg-Id`.
        let id = match required(headers::EVENT_ID) {
            Ok(id) => (headers::EVENT_ID, id),
            Err(_) => {
                let name = async_nats::header::NATS_MESSAGE_ID.as_ref();
                (name, required(name)?)
            }
        };
        let metadata = match h.get(headers::METADATA) {
            None => Metadata::default(),
            Some(v) => serde_json::from_str(v.as_str())
                .map_err(|e| format!("header {} is not metadata JSON: {e}", headers::METADATA))?,
        };
        (&LEGACY, required(headers::EVENT_TYPE)?, id, metadata)
    };
    let (id_name, id) = event_id;
    let event_id =
        Uuid::parse_str(&id).map_err(|e| format!("{id_name} {id:?} is not a uuid: {e}"))?;
    let stream_version = number(names.stream_version)?;
    if stream_version < 1 {
        return Err(format!(
            "{} must be 1 or more, not {stream_version}",
            names.stream_version
        ));
    }
    let schema_version = match text(names.schema_version)? {
        None => 1,
        Some(v) => v
            .parse()
            .map_err(|_| format!("header {} is not a number: {v:?}", names.schema_version))?,
    };
    let payload: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON: {e}"))?;
    let event = ForeignEvent {
        event_id,
        event_type,
        stream_id: required(names.stream_id)?,
        stream_version,
        source_position: number(names.position)?,
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

    use super::*;
    use serde_json::json;

    fn recorded() -> RecordedEvent {
        RecordedEvent {
            position: (42 << 20) + 1,
            stream_id: "product-1".to_owned(),
            stream_version: 3,
            event_id: Uuid::parse_str("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").unwrap(),
            event_type: "PriceChanged".to_owned(),
            schema_version: 2,
            payload: json!({ "price_cents": 1200 }),
            metadata: Metadata {
                correlation_id: Some("req-7".to_owned()),
                causation_id: Some("cause".to_owned()),
                traceparent: None,
                idempotency_key: None,
            },
            recorded_at: "2026-12-05T14:30:00.123456Z".parse().unwrap(),
        }
    }

    fn producer(legacy_headers: bool) -> Producer {
        Producer {
            service: "product-service".to_owned(),
            legacy_headers,
        }
    }

    /// What a publisher adds: the message id.
    fn published_by(producer: &Producer, event: &RecordedEvent) -> (HeaderMap, bytes::Bytes) {
        let (mut headers, body) = encode(producer, event, None).unwrap();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            event.event_id.to_string().as_str(),
        );
        (headers, body)
    }

    fn published(event: &RecordedEvent) -> (HeaderMap, bytes::Bytes) {
        published_by(&producer(true), event)
    }

    /// `all` without the headers `drop` says to drop.
    fn filtered(all: &HeaderMap, drop: impl Fn(&str) -> bool) -> HeaderMap {
        let mut kept = HeaderMap::new();
        for (name, values) in all.iter() {
            if !drop(name.as_ref()) {
                kept.insert(name.clone(), values[0].clone());
            }
        }
        kept
    }

    fn is_cloud(name: &str) -> bool {
        name.starts_with("ce-")
    }

    fn is_legacy(name: &str) -> bool {
        name.starts_with("Es-")
    }

    fn value<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name).unwrap().as_str()
    }

    fn expected(event: &RecordedEvent) -> ForeignEvent {
        ForeignEvent {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            stream_id: event.stream_id.clone(),
            stream_version: event.stream_version,
            source_position: event.position,
            schema_version: event.schema_version,
            payload: event.payload.clone(),
            metadata: event.metadata.clone(),
        }
    }

    #[test]
    fn what_the_relay_encodes_a_consumer_decodes_unchanged() {
        let event = recorded();
        for legacy in [true, false] {
            let (headers, body) = published_by(&producer(legacy), &event);
            assert_eq!(
                decode_parts(Some(&headers), &body).unwrap(),
                expected(&event)
            );
        }
    }

    #[test]
    fn the_cloudevents_attributes_are_those_the_binding_and_our_names_give() {
        let event = recorded();
        let (h, _) = published_by(&producer(false), &event);
        let attributes = [
            ("ce-specversion", "1.0"),
            ("ce-id", "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
            ("ce-source", "/product-service"),
            ("ce-type", "eventsourced.product-service.PriceChanged"),
            ("ce-subject", "product-1"),
            ("ce-time", "2026-12-05T14:30:00.123456Z"),
            ("ce-datacontenttype", "application/json"),
            (
                "ce-dataschema",
                "urn:eventsourced:product-service:PriceChanged:2",
            ),
            ("ce-streamversion", "3"),
            ("ce-position", "44040193"),
            ("ce-schemaversion", "2"),
            ("ce-correlationid", "req-7"),
            ("ce-causationid", "cause"),
        ];
        for (name, expected) in attributes {
            assert_eq!(value(&h, name), expected, "{name}");
        }
        // Nothing else but the message id: no old header, no absent optional attribute.
        let names: Vec<String> = h.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names.len(), attributes.len() + 1, "{names:?}");
    }

    #[test]
    fn the_old_header_set_is_exactly_what_the_previous_release_sent() {
        // The headers the relay of the release before CloudEvents wrote for `recorded()`
        // (its `event_headers`, applied by hand): a consumer not yet upgraded reads these.
        let event = recorded();
        let (all, _) = published(&event);
        let old = filtered(&all, |name| is_cloud(name) || name == "Nats-Msg-Id");
        let previous = [
            ("Es-Event-Id", "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
            ("Es-Event-Type", "PriceChanged"),
            ("Es-Stream-Id", "product-1"),
            ("Es-Stream-Version", "3"),
            ("Es-Position", "44040193"),
            ("Es-Schema-Version", "2"),
            (
                "Es-Metadata",
                r#"{"correlation_id":"req-7","causation_id":"cause"}"#,
            ),
            ("Es-Correlation-Id", "req-7"),
            ("Es-Causation-Id", "cause"),
        ];
        for (name, expected) in previous {
            assert_eq!(value(&old, name), expected, "{name}");
        }
        assert_eq!(old.iter().count(), previous.len());
    }

    #[test]
    fn either_header_set_alone_decodes_the_same_event() {
        let event = recorded();
        let (all, body) = published(&event);
        // A consumer reading a producer of the previous release: the old headers only.
        let old = filtered(&all, is_cloud);
        assert_eq!(decode_parts(Some(&old), &body).unwrap(), expected(&event));
        // A producer that stopped sending them.
        let new = filtered(&all, is_legacy);
        assert_eq!(decode_parts(Some(&new), &body).unwrap(), expected(&event));
        // With both, the CloudEvents attributes are the ones read.
        let mut mixed = all.clone();
        mixed.insert(headers::STREAM_VERSION, "99");
        assert_eq!(decode_parts(Some(&mixed), &body).unwrap().stream_version, 3);
    }

    #[test]
    fn client_supplied_values_travel_percent_encoded_and_come_back_whole() {
        let mut event = recorded();
        event.metadata = Metadata {
            correlation_id: Some("order \"7\" für 100%".to_owned()),
            causation_id: None,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
            idempotency_key: Some("key with spaces".to_owned()),
        };
        let (h, body) = published_by(&producer(false), &event);
        assert_eq!(
            value(&h, ce::CORRELATION_ID),
            "order%20%227%22%20f%C3%BCr%20100%25"
        );
        assert_eq!(value(&h, ce::IDEMPOTENCY_KEY), "key%20with%20spaces");
        assert_eq!(value(&h, headers::TRACEPARENT), value(&h, ce::TRACEPARENT));
        assert_eq!(
            decode_parts(Some(&h), &body).unwrap().metadata,
            event.metadata
        );
    }

    #[test]
    fn a_message_missing_what_a_consumer_needs_is_refused_naming_it() {
        let event = recorded();
        let (all, body) = published(&event);
        let cloud = filtered(&all, is_legacy);
        for name in [
            ce::ID,
            ce::SUBJECT,
            ce::TYPE,
            ce::STREAM_VERSION,
            ce::POSITION,
        ] {
            let error = decode_parts(Some(&filtered(&cloud, |n| n == name)), &body).unwrap_err();
            assert!(error.contains(name), "{name}: {error}");
        }
        let old = filtered(&all, is_cloud);
        let cases: [(&[&str], &str); 5] = [
            (&["Nats-Msg-Id", headers::EVENT_ID], "Nats-Msg-Id"),
            (&[headers::STREAM_ID], headers::STREAM_ID),
            (&[headers::EVENT_TYPE], headers::EVENT_TYPE),
            (&[headers::STREAM_VERSION], headers::STREAM_VERSION),
            (&[headers::POSITION], headers::POSITION),
        ];
        for (omit, named) in cases {
            let kept = filtered(&old, |n| omit.contains(&n));
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
        let (all, _) = published(&event);
        let cloud = filtered(&all, is_legacy);
        let old = filtered(&all, is_cloud);
        assert!(decode_parts(Some(&cloud), b"{ nope")
            .unwrap_err()
            .contains("not JSON"));
        let refused = |base: &HeaderMap, name: &str, value: &str, says: &str| {
            let mut bad = base.clone();
            bad.insert(name, value);
            let error = decode_parts(Some(&bad), b"{}").unwrap_err();
            assert!(error.contains(says), "{name} {value:?}: {error}");
        };
        refused(&cloud, ce::STREAM_VERSION, "0", "1 or more");
        refused(&cloud, ce::ID, "not-a-uuid", "not a uuid");
        refused(&cloud, ce::SPECVERSION, "0.3", "not supported");
        refused(
            &cloud,
            ce::TYPE,
            "com.example.PriceChanged",
            "not one of ours",
        );
        refused(&cloud, ce::DATACONTENTTYPE, "text/plain", "not JSON");
        refused(&cloud, ce::CORRELATION_ID, "%C0%A0", "UTF-8");
        refused(&cloud, ce::SCHEMA_VERSION, "two", "not a number");
        refused(&old, headers::STREAM_VERSION, "0", "1 or more");
        refused(&old, headers::EVENT_ID, "not-a-uuid", "not a uuid");
        refused(&old, headers::METADATA, "[1", "metadata");
        // A content type with parameters is still JSON.
        let mut fine = cloud.clone();
        fine.insert(ce::DATACONTENTTYPE, "application/json; charset=utf-8");
        assert!(decode_parts(Some(&fine), b"{}").is_ok());
    }

    #[test]
    fn a_repair_carries_the_event_id_apart_from_its_message_id() {
        let event = recorded();
        for legacy in [true, false] {
            let (mut republished, body) = encode(&producer(legacy), &event, Some("tail")).unwrap();
            republished.insert(
                async_nats::header::NATS_MESSAGE_ID,
                republished_msg_id(&event, 7).as_str(),
            );
            assert!(is_republished(&republished));
            assert_eq!(position_of(&republished), Some(event.position));
            let decoded = decode_parts(Some(&republished), &body).unwrap();
            assert_eq!(decoded.event_id, event.event_id);
        }
        // An older publisher's message: the event id only as `Nats-Msg-Id`.
        let (all, body) = published(&event);
        let oldest = filtered(&all, |n| is_cloud(n) || n == headers::EVENT_ID);
        assert!(!is_republished(&oldest));
        assert_eq!(
            decode_parts(Some(&oldest), &body).unwrap().event_id,
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
        // Percent-encoded, too.
        let mut h = filtered(&headers, is_legacy);
        h.insert(ce::SUBJECT, "product%001");
        assert!(decode_parts(Some(&h), b"{}").unwrap_err().contains("NUL"));
    }

    #[test]
    fn a_missing_schema_version_or_metadata_has_its_default() {
        let event = recorded();
        let (all, body) = published(&event);
        for kept in [
            filtered(&all, |n| {
                is_cloud(n) || n == headers::SCHEMA_VERSION || n == headers::METADATA
            }),
            filtered(&all, |n| {
                is_legacy(n)
                    || n == ce::SCHEMA_VERSION
                    || n == ce::CORRELATION_ID
                    || n == ce::CAUSATION_ID
            }),
        ] {
            let decoded = decode_parts(Some(&kept), &body).unwrap();
            assert_eq!(decoded.schema_version, 1);
            assert_eq!(decoded.metadata, Metadata::default());
        }
    }
}
