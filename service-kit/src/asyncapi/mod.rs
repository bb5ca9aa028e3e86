//! The AsyncAPI 3.0 document of a service's events, beside its OpenAPI document
//! (`GET /asyncapi.json` and the `asyncapi` command): a channel per event type the service
//! publishes or consumes, a message per schema version of each, the operations (`send` its
//! own events, `receive` the other service's as its view reads them) and its dead letters.
//!
//! A message is a CloudEvent in the NATS binding's binary content mode. Its `headers` schema
//! names every `ce-` header, with a `const` where the type and version fix the value
//! (`ce-type`, `ce-source`, `ce-dataschema`, `ce-schemaversion`, ...). Its `payload` is the
//! schema utoipa derives from the Rust type that writes that version (the current one) or
//! reads it (an older one, in its upcast step), and the schemas it refers to are in
//! `components.schemas`. A subscriber finds the schema of an event it received by the
//! event's `ce-dataschema` ([`payload_schema`]).
//!
//! The names come from the functions the relay and the consumer use
//! (`event_store::cloudevents`, [`EventNames`]), so the document cannot name what the wire
//! does not carry. Each service declares its lists in one [`Contract`] and proves in a test
//! that they hold every version of every type its `wire_events!` enums declare ([`versions`]).
//!
//! - [`builder`]: channels, operations and messages, entry by entry, and the servers;
//! - [`headers`]: the headers schema of each message and the dead-letter message;
//! - `testing` (feature `testing`): the checks each service runs on its contract and its
//!   golden fixtures.

mod builder;
mod headers;
#[cfg(feature = "testing")]
pub mod testing;

use std::io::Write as _;

use actix_web::{web, HttpResponse};
use event_store::cloudevents::{self, headers as ce};
use event_store::wire::WireEvent;
use serde_json::{json, Value};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use self::builder::{parameters, servers, Action, Builder};
use crate::config::{self, Config, EventNames};

/// The AsyncAPI version of the documents.
pub const ASYNCAPI_VERSION: &str = "3.0.0";
/// The id of the dead-letter channel and the name of its message.
pub const DEAD_LETTERS: &str = "DeadLetter";

/// One schema version of one event type, with the JSON Schema of the Rust type that writes it
/// (the type's current version) or reads it (an older one).
#[derive(Clone)]
pub struct EventSchema {
    /// The service that writes the events, such as `product-service`.
    pub producer: &'static str,
    /// The stored type name, such as `PriceChanged`.
    pub event_type: &'static str,
    pub version: i32,
    /// The name of the payload's schema in `components.schemas`: the Rust type's
    /// (`PriceChanged`, `PriceChangedV1`).
    pub schema_name: String,
    schema: RefOr<Schema>,
    /// The schemas the payload's refers to (`Money`), by name.
    references: Vec<(String, RefOr<Schema>)>,
}

impl EventSchema {
    /// Version `version` of `producer`'s `event_type`, shaped as `T`.
    pub fn of<T: ToSchema>(producer: &'static str, event_type: &'static str, version: i32) -> Self {
        let mut references = Vec::new();
        T::schemas(&mut references);
        EventSchema {
            producer,
            event_type,
            version,
            schema_name: T::name().into_owned(),
            schema: T::schema(),
            references,
        }
    }

    /// The key of its message in the document: `PriceChanged_v2`.
    pub fn message_key(&self) -> String {
        message_key(self.event_type, self.version)
    }
}

// utoipa's schema types implement `Debug` only with its `debug` feature: the names suffice.
impl std::fmt::Debug for EventSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSchema")
            .field("producer", &self.producer)
            .field("event_type", &self.event_type)
            .field("version", &self.version)
            .field("schema_name", &self.schema_name)
            .finish_non_exhaustive()
    }
}

/// The key of the message of `event_type` at `version`: `PriceChanged_v2`.
pub fn message_key(event_type: &str, version: i32) -> String {
    format!("{event_type}_v{version}")
}

/// Every (type, version) an event enum reads or writes: versions 1 to current of each of its
/// types, in declaration order. What a service's [`Contract`] must list, no more and no less.
pub fn versions<E: WireEvent>() -> Vec<(&'static str, i32)> {
    E::TYPES
        .iter()
        .flat_map(|t| (1..=E::current_version(t).unwrap_or(0)).map(move |v| (*t, v)))
        .collect()
}

/// What a service's document describes: the events it publishes and those it consumes, each
/// version with its schema.
#[derive(Debug, Clone, Default)]
pub struct Contract {
    /// Every version of every type it writes (the relay sends old ones too when stored events
    /// are sent again).
    pub published: Vec<EventSchema>,
    /// Every version of every type of the other service it reads, shaped as its view reads it.
    pub consumed: Vec<EventSchema>,
}

/// A [`Contract`] that cannot be one document.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("{0} is listed twice")]
    Duplicate(String),
    #[error("two different schemas are named {0}")]
    SchemaClash(String),
    #[error("{key} is written by {producer}; {service} {role} it")]
    Producer {
        key: String,
        producer: String,
        service: String,
        role: &'static str,
    },
    #[error("a schema does not serialize: {0}")]
    Json(#[from] serde_json::Error),
}

/// The document a service serves at `GET /asyncapi.json`.
#[derive(Debug, Clone)]
pub struct Document(pub Value);

/// The AsyncAPI document of this service's events.
#[utoipa::path(get, path = "/asyncapi.json", tag = "meta",
    responses((status = 200, description = "The AsyncAPI 3.0 document of the events this \
        service publishes and consumes: their NATS subjects, CloudEvents headers and payload \
        schemas, a message per schema version", content_type = "application/json")))]
pub async fn asyncapi_json(document: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok().json(&document.0)
}

/// Writes `document` to standard output (the `asyncapi` command).
pub fn print(document: &Document) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &document.0)?;
    writeln!(out)?;
    Ok(())
}

/// The document of service `S` configured as `config` (its namespace and NATS servers), at
/// crate version `version`, describing `contract`.
pub fn document<S: config::Service>(
    config: &Config<S>,
    version: &str,
    contract: &Contract,
) -> Result<Document, ContractError> {
    // The addresses are the relay's and the consumer's, with the namespace as a parameter.
    let names = EventNames::new("{namespace}", S::NAME, S::OWN_EVENTS, S::OTHER_EVENTS);
    let mut doc = Builder::default();
    for entry in &contract.published {
        if entry.producer != S::NAME {
            return Err(producer_error::<S>(entry, "publishes"));
        }
        doc.event(entry, Action::Send, &names)?;
    }
    for entry in &contract.consumed {
        if entry.producer == S::NAME {
            return Err(producer_error::<S>(entry, "consumes"));
        }
        doc.event(entry, Action::Receive, &names)?;
    }
    doc.dead_letters(S::NAME, &names);
    let Builder {
        channels,
        operations,
        messages,
        schemas,
        ..
    } = doc;
    Ok(Document(json!({
        "asyncapi": ASYNCAPI_VERSION,
        "id": format!("urn:{}:{}", cloudevents::NAMESPACE, S::NAME),
        "info": {
            "title": S::NAME,
            "version": version,
            "description": description::<S>(),
        },
        "defaultContentType": cloudevents::DATA_CONTENT_TYPE,
        "servers": servers(&config.common.nats_url),
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "parameters": parameters(&config.common.events_namespace),
            "correlationIds": {
                "correlation": {
                    "description": "The request (or saga) the event belongs to: the \
                        `X-Request-Id` of the request that began it, carried into every event \
                        that follows from it.",
                    "location": format!("$message.header#/{}", ce::CORRELATION_ID),
                }
            },
        },
    })))
}

/// The payload schema of the event whose `ce-dataschema` is `dataschema`, as one standalone
/// JSON Schema (the message's payload, with the document's component schemas beside it so
/// its `$ref`s resolve): what a subscriber validates a received event's body against. `None`
/// when no message of the document has that `ce-dataschema`.
pub fn payload_schema(document: &Value, dataschema: &str) -> Option<Value> {
    let messages = document.pointer("/components/messages")?.as_object()?;
    let path = format!("/headers/properties/{}/const", ce::DATASCHEMA);
    let message = messages
        .values()
        .find(|m| m.pointer(&path).and_then(Value::as_str) == Some(dataschema))?;
    Some(json!({
        "allOf": [message.get("payload")?],
        "components": { "schemas": document.pointer("/components/schemas")? },
    }))
}

fn producer_error<S: config::Service>(entry: &EventSchema, role: &'static str) -> ContractError {
    ContractError::Producer {
        key: entry.message_key(),
        producer: entry.producer.to_owned(),
        service: S::NAME.to_owned(),
        role,
    }
}

fn description<S: config::Service>() -> String {
    format!(
        "{about}. The events {service} publishes on NATS JetStream and those it consumes, a \
        message per schema version of each type. Every message is a CloudEvent {spec} in the \
        NATS binding's binary content mode: its attributes are `ce-` headers (percent-encoded \
        where the binding requires), its body the JSON payload. An event's `ce-dataschema` is \
        the `const` of the `ce-dataschema` header of exactly one message here, whose payload \
        is its schema. For one release the previous envelope's `Es-*` headers are sent beside \
        them (deprecated).",
        about = S::ABOUT,
        service = S::NAME,
        spec = cloudevents::SPEC_VERSION,
    )
}

#[cfg(test)]
mod tests {

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::config::test_service::Shop;

    /// An amount.
    #[derive(Serialize, Deserialize, ToSchema)]
    struct Price {
        cents: i64,
    }

    /// Opened, version 2.
    #[derive(Serialize, Deserialize, ToSchema)]
    struct Opened {
        id: uuid::Uuid,
        price: Price,
    }

    /// Opened as version 1 wrote it.
    #[derive(Serialize, Deserialize, ToSchema)]
    struct OpenedV1 {
        id: uuid::Uuid,
        price_cents: i64,
    }

    /// Restocked, as the shop reads it.
    #[derive(Serialize, Deserialize, ToSchema)]
    struct Restocked {
        quantity: i64,
    }

    fn contract() -> Contract {
        Contract {
            published: vec![
                EventSchema::of::<OpenedV1>("shop-service", "Opened", 1),
                EventSchema::of::<Opened>("shop-service", "Opened", 2),
            ],
            consumed: vec![EventSchema::of::<Restocked>(
                "stock-service",
                "Restocked",
                1,
            )],
        }
    }

    fn config() -> Config<Shop> {
        let mut config = Config::defaults();
        config.common.events_namespace = "t1".to_owned();
        config.common.nats_url = "nats://u:p@n1:4222, nats://n2:4222/".to_owned();
        config
    }

    #[test]
    fn a_contract_becomes_channels_messages_and_operations_named_as_on_the_wire() {
        let Document(doc) = document(&config(), "1.2.3", &contract()).unwrap();

        assert_eq!(doc["asyncapi"], "3.0.0");
        assert_eq!(doc["info"]["version"], "1.2.3");
        assert_eq!(doc["info"]["title"], "shop-service");
        assert_eq!(doc["defaultContentType"], "application/json");
        assert_eq!(doc["servers"]["nats-1"]["host"], "n1:4222");
        assert_eq!(doc["servers"]["nats-2"]["host"], "n2:4222");
        assert_eq!(doc["servers"]["nats-1"]["protocol"], "nats");
        assert_eq!(
            doc["channels"]["Opened"]["address"],
            "{namespace}.shop.events.{streamId}.Opened"
        );
        assert_eq!(
            doc["channels"]["Restocked"]["address"],
            "{namespace}.stock.events.{streamId}.Restocked"
        );
        assert_eq!(
            doc["channels"][DEAD_LETTERS]["address"],
            "{namespace}.deadletter.shop-service"
        );
        assert_eq!(
            doc["components"]["parameters"]["namespace"]["default"],
            "t1"
        );
        let opened = &doc["channels"]["Opened"]["messages"];
        assert_eq!(
            opened.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["Opened_v1", "Opened_v2"]
        );
        assert_eq!(
            opened["Opened_v2"]["$ref"],
            "#/components/messages/Opened_v2"
        );
        let ops = &doc["operations"];
        assert_eq!(ops["sendOpened"]["action"], "send");
        assert_eq!(ops["sendOpened"]["channel"]["$ref"], "#/channels/Opened");
        assert_eq!(
            ops["sendOpened"]["messages"],
            json!([
                { "$ref": "#/channels/Opened/messages/Opened_v1" },
                { "$ref": "#/channels/Opened/messages/Opened_v2" },
            ])
        );
        assert_eq!(ops["receiveRestocked"]["action"], "receive");
        assert_eq!(ops["sendDeadLetter"]["action"], "send");

        let headers = &doc["components"]["messages"]["Opened_v1"]["headers"];
        let constant = |name: &str| headers["properties"][name]["const"].clone();
        assert_eq!(constant("ce-type"), "eventsourced.shop-service.Opened");
        assert_eq!(constant("ce-source"), "/shop-service");
        assert_eq!(
            constant("ce-dataschema"),
            "urn:eventsourced:shop-service:Opened:1"
        );
        assert_eq!(constant("ce-schemaversion"), "1");
        assert_eq!(constant("ce-specversion"), "1.0");
        assert_eq!(constant("ce-datacontenttype"), "application/json");
        assert_eq!(constant("Es-Event-Type"), "Opened");
        assert_eq!(headers["properties"]["Es-Metadata"]["deprecated"], true);
        let required = headers["required"].as_array().unwrap();
        assert!(required.contains(&json!("ce-id")) && required.contains(&json!("Nats-Msg-Id")));
        assert!(!required.contains(&json!("ce-correlationid")));
        let restocked = &doc["components"]["messages"]["Restocked_v1"]["headers"]["properties"];
        assert_eq!(restocked["ce-source"]["const"], "/stock-service");
        assert_eq!(
            doc["components"]["messages"][DEAD_LETTERS]["headers"]["properties"]
                ["Es-Dead-Letter-Consumer"]["const"],
            "shop-service"
        );
    }

    #[test]
    fn payloads_refer_to_component_schemas_that_resolve_inside_the_document() {
        let Document(doc) = document(&config(), "1", &contract()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let payload = &doc["components"]["messages"]["Opened_v2"]["payload"];
        assert_eq!(payload["$ref"], "#/components/schemas/Opened");
        assert_eq!(
            schemas["Opened"]["properties"]["price"]["$ref"],
            "#/components/schemas/Price"
        );
        assert!(schemas["Price"].is_object() && schemas["OpenedV1"].is_object());
        let text = doc.to_string();
        assert!(!text.contains("\"$id\""), "no schema carries an $id");
        for reference in text.split("\"$ref\":\"").skip(1) {
            let pointer = reference.split('"').next().unwrap();
            let pointer = pointer.strip_prefix('#').unwrap();
            assert!(doc.pointer(pointer).is_some(), "{pointer} resolves");
        }
    }

    #[test]
    fn every_key_is_one_asyncapi_allows() {
        let Document(doc) = document(&config(), "1", &contract()).unwrap();
        let allowed = |key: &str| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        };
        for section in [
            "/channels",
            "/operations",
            "/components/messages",
            "/components/schemas",
            "/components/parameters",
        ] {
            for key in doc.pointer(section).unwrap().as_object().unwrap().keys() {
                assert!(allowed(key), "{section}: {key}");
            }
        }
    }

    #[test]
    fn the_payload_schema_of_an_event_is_found_by_its_dataschema() {
        let Document(doc) = document(&config(), "1", &contract()).unwrap();
        let schema = payload_schema(&doc, "urn:eventsourced:shop-service:Opened:1").unwrap();
        assert_eq!(schema["allOf"][0]["$ref"], "#/components/schemas/OpenedV1");
        assert!(schema["components"]["schemas"]["OpenedV1"].is_object());
        assert_eq!(
            payload_schema(&doc, "urn:eventsourced:shop-service:Opened:3"),
            None
        );
    }

    #[test]
    fn a_contract_that_cannot_be_one_document_is_refused() {
        let twice = Contract {
            published: vec![
                EventSchema::of::<Opened>("shop-service", "Opened", 2),
                EventSchema::of::<Opened>("shop-service", "Opened", 2),
            ],
            consumed: vec![],
        };
        let both_ways = Contract {
            published: vec![EventSchema::of::<Opened>("shop-service", "Opened", 1)],
            consumed: vec![EventSchema::of::<OpenedV1>("stock-service", "Opened", 2)],
        };
        let foreign = Contract {
            published: vec![EventSchema::of::<Opened>("stock-service", "Opened", 1)],
            consumed: vec![],
        };
        let own = Contract {
            published: vec![],
            consumed: vec![EventSchema::of::<Restocked>("shop-service", "Restocked", 1)],
        };
        let errors: Vec<String> = [twice, both_ways, foreign, own]
            .iter()
            .map(|c| document(&config(), "1", c).unwrap_err().to_string())
            .collect();
        assert_eq!(
            errors,
            [
                "message Opened_v2 is listed twice",
                "channel Opened is listed twice",
                "Opened_v1 is written by stock-service; shop-service publishes it",
                "Restocked_v1 is written by shop-service; shop-service consumes it",
            ]
        );
    }

    #[test]
    fn versions_lists_one_to_current_of_every_type() {
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        struct A {}
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        struct B {}
        fn same(v: Value) -> Result<Value, String> {
            Ok(v)
        }
        event_store::wire_events! { Both { A = 3 [same, same], B } }
        assert_eq!(versions::<Both>(), [("A", 1), ("A", 2), ("A", 3), ("B", 1)]);
    }
}
