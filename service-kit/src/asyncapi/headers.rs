//! The headers schema of each message: the CloudEvents attributes as the relay writes them
//! (`event_store::cloudevents`), with a `const` where the type and version fix the value,
//! `Nats-Msg-Id`, and the previous envelope's headers, deprecated; and the dead-letter
//! message's.

use event_store::cloudevents::{self, headers as ce};
use event_store::consumer::{dead_letter_headers, DeadLetterKind};
use event_store::envelope::headers as es;
use event_store::repair::Reason;
use serde_json::{json, Map, Value};

use super::{EventSchema, DEAD_LETTERS};

/// The NATS header JetStream de-duplicates by.
const NATS_MSG_ID: &str = "Nats-Msg-Id";
/// Decimal integers from 1, as the number headers carry them.
const POSITIVE: &str = "^[1-9][0-9]*$";
/// A W3C `traceparent`.
const TRACEPARENT: &str = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$";

/// The headers schema of one type and version: the CloudEvents attributes, `Nats-Msg-Id`,
/// and the headers of the previous envelope, still sent for one release.
pub(super) fn event_headers(entry: &EventSchema) -> Value {
    let (producer, kind, version) = (entry.producer, entry.event_type, entry.version);
    let text = |description: &str| json!({ "type": "string", "description": description });
    let fixed = |value: String, description: &str| json!({ "type": "string", "const": value, "description": description });
    let pattern = |pattern: &str, description: &str| json!({ "type": "string", "pattern": pattern, "description": description });
    let formatted = |format: &str, description: &str| json!({ "type": "string", "format": format, "description": description });
    let reasons = || json!(republish_reasons());
    let properties = [
        (
            ce::SPECVERSION,
            fixed(cloudevents::SPEC_VERSION.to_owned(), "The CloudEvents version."),
        ),
        (
            ce::ID,
            formatted(
                "uuid",
                "The event id: the same however often the event is sent.",
            ),
        ),
        (
            ce::SOURCE,
            fixed(cloudevents::source(producer), "The service that wrote it."),
        ),
        (
            ce::TYPE,
            fixed(
                cloudevents::event_type(producer, kind),
                "The event type; its last part is the stored type name.",
            ),
        ),
        (
            ce::SUBJECT,
            text("The id of the event's stream, such as `product-<uuid>` (the subject's `{streamId}`)."),
        ),
        (
            ce::TIME,
            formatted("date-time", "When the producer's store recorded the event (RFC 3339, UTC)."),
        ),
        (
            ce::DATACONTENTTYPE,
            fixed(cloudevents::DATA_CONTENT_TYPE.to_owned(), "The payload is JSON."),
        ),
        (
            ce::DATASCHEMA,
            fixed(
                cloudevents::dataschema(producer, kind, version),
                "The payload's schema: this message's, the one message of this document with \
                this URN.",
            ),
        ),
        (
            ce::STREAM_VERSION,
            pattern(
                POSITIVE,
                "The event's version in its stream: 1, 2, ... without gaps. A consumer that \
                gets a later one before its predecessor waits, and asks the producer for it.",
            ),
        ),
        (
            ce::POSITION,
            pattern(
                POSITIVE,
                "The event's position in the producer's store: increasing, with gaps.",
            ),
        ),
        (
            ce::SCHEMA_VERSION,
            fixed(version.to_string(), "The payload's schema version."),
        ),
        (
            ce::CORRELATION_ID,
            text("The request (or saga) the event belongs to; percent-encoded, as the binding requires."),
        ),
        (
            ce::CAUSATION_ID,
            text("The message or request that caused the event; percent-encoded."),
        ),
        (
            ce::TRACEPARENT,
            pattern(TRACEPARENT, "W3C trace context (the distributed-tracing extension)."),
        ),
        (
            ce::IDEMPOTENCY_KEY,
            text("The `Idempotency-Key` of the request that caused the event; percent-encoded."),
        ),
        (
            ce::REPUBLISHED,
            json!({
                "type": "string",
                "enum": reasons(),
                "description": "Only on an event sent again to repair the broker: why.",
            }),
        ),
        (
            NATS_MSG_ID,
            text(
                "JetStream's de-duplication id: the event id on the event's first \
                publication, `<event id>.r<n>` when a repair sends it again.",
            ),
        ),
        (
            es::EVENT_ID,
            deprecated(formatted("uuid", "The event id (`ce-id`).")),
        ),
        (
            es::EVENT_TYPE,
            deprecated(fixed(kind.to_owned(), "The stored type name (`ce-type`).")),
        ),
        (es::STREAM_ID, deprecated(text("The stream id (`ce-subject`)."))),
        (
            es::STREAM_VERSION,
            deprecated(pattern(POSITIVE, "`ce-streamversion`.")),
        ),
        (es::POSITION, deprecated(pattern(POSITIVE, "`ce-position`."))),
        (
            es::SCHEMA_VERSION,
            deprecated(fixed(version.to_string(), "`ce-schemaversion`.")),
        ),
        (
            es::METADATA,
            deprecated(text(
                "The event's metadata as a JSON object: `correlation_id`, `causation_id`, \
                `traceparent`, `idempotency_key`.",
            )),
        ),
        (es::CORRELATION_ID, deprecated(text("`ce-correlationid`."))),
        (es::CAUSATION_ID, deprecated(text("`ce-causationid`."))),
        (
            es::TRACEPARENT,
            deprecated(pattern(TRACEPARENT, "`ce-traceparent`.")),
        ),
        (
            es::REPUBLISHED,
            deprecated(json!({ "type": "string", "enum": reasons(), "description": "`ce-republished`." })),
        ),
    ];
    let required = [
        ce::SPECVERSION,
        ce::ID,
        ce::SOURCE,
        ce::TYPE,
        ce::SUBJECT,
        ce::TIME,
        ce::DATACONTENTTYPE,
        ce::DATASCHEMA,
        ce::STREAM_VERSION,
        ce::POSITION,
        ce::SCHEMA_VERSION,
        NATS_MSG_ID,
    ];
    let properties: Map<String, Value> = properties
        .into_iter()
        .map(|(name, schema)| (name.to_owned(), schema))
        .collect();
    json!({ "type": "object", "properties": properties, "required": required })
}

/// A header of the previous envelope, sent beside the CloudEvents headers for one release.
fn deprecated(mut schema: Value) -> Value {
    schema["deprecated"] = json!(true);
    if let Some(description) = schema["description"].as_str() {
        schema["description"] = json!(format!(
            "Deprecated: the previous envelope's header, still sent for one release. {description}"
        ));
    }
    schema
}

pub(super) fn dead_letter_message(consumer: &str) -> Value {
    json!({
        "name": DEAD_LETTERS,
        "title": "A message the consumer gave up on",
        "summary": "The message as it arrived, with why it was given up.",
        "description": "The original message's headers and body, unchanged (the body may be \
            neither JSON nor an event: that can be why it is here), and three headers more.",
        "headers": {
            "type": "object",
            "properties": {
                dead_letter_headers::ERROR: {
                    "type": "string",
                    "description": "Why: the decoding or handling error, on one line, cut when long.",
                },
                dead_letter_headers::CONSUMER: {
                    "type": "string",
                    "const": consumer,
                    "description": "The durable consumer that gave up on it.",
                },
                dead_letter_headers::KIND: {
                    "type": "string",
                    "enum": dead_letter_kinds(),
                    "description": "poison: it cannot be decoded, or a handler refused it; \
                        version_conflict: another event is recorded at its stream version; \
                        out_of_order: its predecessor in its stream never arrived; exhausted: a \
                        handler kept failing; newer_schema: written at a schema version this \
                        service does not read yet.",
                },
            },
            "required": [
                dead_letter_headers::ERROR,
                dead_letter_headers::CONSUMER,
                dead_letter_headers::KIND,
            ],
        },
        "payload": { "description": "The original message's body, byte for byte." },
    })
}

/// Every dead-letter kind, as its header carries it.
fn dead_letter_kinds() -> Vec<&'static str> {
    use DeadLetterKind::*;
    [Poison, VersionConflict, OutOfOrder, Exhausted, NewerSchema]
        .into_iter()
        // A kind added to the enum fails to compile here until it is added to the list above.
        .map(|kind| match kind {
            Poison | VersionConflict | OutOfOrder | Exhausted | NewerSchema => kind.as_str(),
        })
        .collect()
}

/// Every reason an event is sent again, as its header carries it.
fn republish_reasons() -> Vec<&'static str> {
    use Reason::*;
    [Tail, Stream, Range, Operator]
        .into_iter()
        // A reason added to the enum fails to compile here until it is added to the list above.
        .map(|reason| match reason {
            Tail | Stream | Range | Operator => reason.as_str(),
        })
        .collect()
}
