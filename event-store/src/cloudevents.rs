//! The names and value forms of our events as CloudEvents 1.0, in the binary content mode of
//! the CloudEvents NATS protocol binding: every attribute is a `ce-` header, the payload is the
//! message body. [`crate::envelope`] writes and reads them; the services' AsyncAPI documents
//! describe them with the same functions, so the two cannot disagree.
//!
//! | attribute | value |
//! | --- | --- |
//! | `specversion` | `1.0` |
//! | `id` | the event id (also `Nats-Msg-Id` on its first publication) |
//! | `source` | `/<service>`, such as `/product-service` ([`source`]) |
//! | `type` | `eventsourced.<service>.<EventType>` ([`event_type`]) |
//! | `subject` | the stream id, such as `product-<uuid>` |
//! | `time` | when the store recorded the event (RFC 3339, UTC) |
//! | `datacontenttype` | `application/json` |
//! | `dataschema` | `urn:eventsourced:<service>:<EventType>:<version>` ([`dataschema`]); the AsyncAPI document gives the schema of each |
//! | extensions | `streamversion`, `position`, `schemaversion`, `correlationid`, `causationid`, `traceparent` (the distributed-tracing extension), `idempotencykey`, `republished` |
//!
//! String values are percent-encoded as the binding requires (space, `"`, `%` and everything
//! outside printable ASCII); our own values never need it, but correlation ids and idempotency
//! keys come from clients.

use std::borrow::Cow;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// The CloudEvents version the events follow.
pub const SPEC_VERSION: &str = "1.0";
/// Every payload is JSON.
pub const DATA_CONTENT_TYPE: &str = "application/json";
/// The first part of every event type name and schema URN.
pub const NAMESPACE: &str = "eventsourced";

/// The NATS header of each attribute (NATS header names are case-insensitive; we write lower case).
pub mod headers {
    pub const SPECVERSION: &str = "ce-specversion";
    pub const ID: &str = "ce-id";
    pub const SOURCE: &str = "ce-source";
    pub const TYPE: &str = "ce-type";
    pub const SUBJECT: &str = "ce-subject";
    pub const TIME: &str = "ce-time";
    pub const DATACONTENTTYPE: &str = "ce-datacontenttype";
    pub const DATASCHEMA: &str = "ce-dataschema";
    /// Extension: the event's version in its stream (1, 2, ...).
    pub const STREAM_VERSION: &str = "ce-streamversion";
    /// Extension: the event's global position in its producer's store.
    pub const POSITION: &str = "ce-position";
    /// Extension: the schema version of the payload.
    pub const SCHEMA_VERSION: &str = "ce-schemaversion";
    /// Extension: the id of the request (or saga) the event belongs to.
    pub const CORRELATION_ID: &str = "ce-correlationid";
    /// Extension: the id of the message or request that caused the event.
    pub const CAUSATION_ID: &str = "ce-causationid";
    /// The distributed-tracing extension's attribute (W3C trace context).
    pub const TRACEPARENT: &str = "ce-traceparent";
    /// Extension: the `Idempotency-Key` of the request that caused the event.
    pub const IDEMPOTENCY_KEY: &str = "ce-idempotencykey";
    /// Extension, only on an event sent again to repair the broker: why (`tail`, `stream`,
    /// `range`, `operator`).
    pub const REPUBLISHED: &str = "ce-republished";

    /// Every header above, in the order the relay writes them.
    pub const ALL: [&str; 16] = [
        SPECVERSION,
        ID,
        SOURCE,
        TYPE,
        SUBJECT,
        TIME,
        DATACONTENTTYPE,
        DATASCHEMA,
        STREAM_VERSION,
        POSITION,
        SCHEMA_VERSION,
        CORRELATION_ID,
        CAUSATION_ID,
        TRACEPARENT,
        IDEMPOTENCY_KEY,
        REPUBLISHED,
    ];
}

/// The `source` of every event `service` publishes: `/product-service`.
pub fn source(service: &str) -> String {
    format!("/{service}")
}

/// The CloudEvents `type` of the stored event type `event_type` written by `service`:
/// `eventsourced.product-service.PriceChanged`.
pub fn event_type(service: &str, event_type: &str) -> String {
    format!("{NAMESPACE}.{service}.{event_type}")
}

/// The stored event type name inside a CloudEvents `type` (its last dot-separated part), or
/// `None` when it is not one of [`event_type`]'s.
pub fn stored_type(ce_type: &str) -> Option<&str> {
    let rest = ce_type.strip_prefix(NAMESPACE)?.strip_prefix('.')?;
    let (service, name) = rest.rsplit_once('.')?;
    (!service.is_empty() && !name.is_empty()).then_some(name)
}

/// The `dataschema` of `event_type` at schema `version` written by `service`:
/// `urn:eventsourced:product-service:PriceChanged:2`. An identifier, not an address: the
/// service's AsyncAPI document (`GET /asyncapi.json`) gives the JSON Schema of each.
pub fn dataschema(service: &str, event_type: &str, version: i32) -> String {
    format!("urn:{NAMESPACE}:{service}:{event_type}:{version}")
}

/// What the binding percent-encodes: controls, space, `"` and `%` (and, always, every byte
/// outside ASCII).
const ENCODED: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// A string attribute's value as a NATS header value.
pub fn encode_value(value: &str) -> Cow<'_, str> {
    utf8_percent_encode(value, ENCODED).into()
}

/// A header value back to the attribute's value: a double-quoted value is unquoted first (older
/// binding versions allowed them), then one round of percent-decoding; bytes that are not
/// UTF-8 once decoded are refused.
pub fn decode_value(value: &str) -> Result<Cow<'_, str>, String> {
    let unquoted: Cow<str> = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' {
                    chars.next().ok_or("a quoted value ends in a backslash")?
                } else {
                    c
                });
            }
            out.into()
        }
        None => value.into(),
    };
    if !unquoted.contains('%') {
        return Ok(unquoted);
    }
    let decoded = percent_decode_str(&unquoted)
        .decode_utf8()
        .map_err(|e| format!("{value:?} is not UTF-8 once percent-decoded: {e}"))?;
    Ok(Cow::Owned(decoded.into_owned()))
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn names_are_stable_and_reversible() {
        let ce = event_type("product-service", "PriceChanged");
        assert_eq!(ce, "eventsourced.product-service.PriceChanged");
        assert_eq!(stored_type(&ce), Some("PriceChanged"));
        assert_eq!(stored_type("com.other.PriceChanged"), None);
        assert_eq!(stored_type("eventsourced.PriceChanged"), None);
        assert_eq!(stored_type("eventsourced.svc."), None);
        assert_eq!(source("order-service"), "/order-service");
        assert_eq!(
            dataschema("order-service", "OrderPlaced", 2),
            "urn:eventsourced:order-service:OrderPlaced:2"
        );
    }

    #[test]
    fn values_are_percent_encoded_as_the_binding_says() {
        // The binding's own example.
        let euro = "Euro \u{20AC} \u{1F600}";
        assert_eq!(encode_value(euro), "Euro%20%E2%82%AC%20%F0%9F%98%80");
        assert_eq!(
            decode_value("Euro%20%E2%82%AC%20%F0%9F%98%80").unwrap(),
            euro
        );
        for plain in [
            "req-7",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(matches!(encode_value(plain), Cow::Borrowed(_)));
        }
        assert_eq!(encode_value("a\"b%c\td"), "a%22b%25c%09d");
        for value in ["a\"b%c\td", "x y", "\u{0}", "ünï", "100%"] {
            assert_eq!(decode_value(&encode_value(value)).unwrap(), value);
        }
        // Lower-case hex and needless encoding are accepted; an overlong encoding is not.
        assert_eq!(decode_value("%e2%82%ac%41").unwrap(), "\u{20AC}A");
        assert!(decode_value("%C0%A0").is_err());
        // Double-quoted values of older senders.
        assert_eq!(decode_value(r#""a \"b\" c""#).unwrap(), r#"a "b" c"#);
        assert!(decode_value(r#""a\""#).is_err());
    }
}
