//! The parts of a document, filled entry by entry: a channel and an operation per event type,
//! a message per version, the component schemas; the dead letters; the servers and the
//! address parameters.

use std::collections::{BTreeMap, BTreeSet};

use event_store::cloudevents::{self, headers as ce};
use serde_json::{json, Map, Value};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;

use super::headers::{dead_letter_message, event_headers};
use super::{ContractError, EventSchema, DEAD_LETTERS};
use crate::config::EventNames;

/// What the service does with a type's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Send,
    Receive,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Send => "send",
            Action::Receive => "receive",
        }
    }
}

/// The parts of a document as they are filled, entry by entry.
#[derive(Default)]
pub(super) struct Builder {
    pub(super) channels: Map<String, Value>,
    pub(super) operations: Map<String, Value>,
    pub(super) messages: Map<String, Value>,
    pub(super) schemas: Map<String, Value>,
    /// Which action each channel was made for, so one type cannot be both sent and received.
    actions: BTreeMap<String, Action>,
}

impl Builder {
    /// The message of `entry` in its type's channel and operation (made with the first version).
    pub(super) fn event(
        &mut self,
        entry: &EventSchema,
        action: Action,
        names: &EventNames,
    ) -> Result<(), ContractError> {
        let key = entry.message_key();
        let channel_id = entry.event_type.to_owned();
        match self.actions.get(&channel_id) {
            Some(made) if *made != action => {
                return Err(ContractError::Duplicate(format!("channel {channel_id}")))
            }
            Some(_) => {}
            None => {
                self.actions.insert(channel_id.clone(), action);
                let prefix = match action {
                    Action::Send => &names.own_subjects,
                    Action::Receive => &names.other_subjects,
                };
                self.channels.insert(
                    channel_id.clone(),
                    channel(entry, action, prefix, &names.durable),
                );
                self.operations.insert(
                    format!("{}{}", action.as_str(), entry.event_type),
                    operation(entry, action, &names.durable),
                );
            }
        }
        if self.messages.contains_key(&key) {
            return Err(ContractError::Duplicate(format!("message {key}")));
        }
        self.schema(&entry.schema_name, &entry.schema)?;
        for (name, schema) in &entry.references {
            self.schema(name, schema)?;
        }
        self.messages.insert(key.clone(), message(entry, action));
        let reference = json!({ "$ref": format!("#/components/messages/{key}") });
        self.channels[&channel_id]["messages"][&key] = reference;
        let from_channel = json!({ "$ref": format!("#/channels/{channel_id}/messages/{key}") });
        let operation = format!("{}{}", action.as_str(), entry.event_type);
        if let Some(list) = self.operations[&operation]["messages"].as_array_mut() {
            list.push(from_channel);
        }
        Ok(())
    }

    /// Adds a component schema; the same name twice must be the same schema.
    fn schema(&mut self, name: &str, schema: &RefOr<Schema>) -> Result<(), ContractError> {
        let schema = serde_json::to_value(schema)?;
        match self.schemas.get(name) {
            Some(known) if *known != schema => Err(ContractError::SchemaClash(name.to_owned())),
            Some(_) => Ok(()),
            None => {
                self.schemas.insert(name.to_owned(), schema);
                Ok(())
            }
        }
    }

    /// The dead-letter channel, its message and the operation that sends them.
    pub(super) fn dead_letters(&mut self, service: &str, names: &EventNames) {
        let key = DEAD_LETTERS;
        self.channels.insert(
            key.to_owned(),
            json!({
                "address": names.dead_letter_subject,
                "title": format!("{service}'s dead letters"),
                "description": format!(
                    "Every message {service}'s consumer could not take (poison, a conflict at \
                    a stream version, out of order, failing or too new until its deliveries \
                    ran out). Plain NATS, not a JetStream stream: the record that lasts is the \
                    `dead_letters` table in {service}'s database."
                ),
                "parameters": { "namespace": { "$ref": "#/components/parameters/namespace" } },
                "messages": { key: { "$ref": format!("#/components/messages/{key}") } },
            }),
        );
        self.messages
            .insert(key.to_owned(), dead_letter_message(&names.durable));
        self.operations.insert(
            format!("send{key}"),
            json!({
                "action": "send",
                "channel": { "$ref": format!("#/channels/{key}") },
                "summary": format!(
                    "{service}'s consumer publishes a message it gives up on, once it has \
                    recorded it, and only then acknowledges the original."
                ),
                "messages": [{ "$ref": format!("#/channels/{key}/messages/{key}") }],
            }),
        );
    }
}

fn channel(entry: &EventSchema, action: Action, prefix: &str, service: &str) -> Value {
    let (producer, kind) = (entry.producer, entry.event_type);
    let description = match action {
        Action::Send => format!(
            "{producer}'s {kind} events. Its relay publishes every event of its store, in \
            store order, at least once: `Nats-Msg-Id` lets JetStream drop a duplicate inside \
            its window, and each consumer's inbox takes an event once for ever."
        ),
        Action::Receive => format!("{producer}'s {kind} events, as {service} reads them."),
    };
    json!({
        "address": format!("{prefix}.{{streamId}}.{kind}"),
        "title": kind,
        "description": description,
        "parameters": {
            "namespace": { "$ref": "#/components/parameters/namespace" },
            "streamId": { "$ref": "#/components/parameters/streamId" },
        },
        "messages": {},
    })
}

fn operation(entry: &EventSchema, action: Action, service: &str) -> Value {
    let kind = entry.event_type;
    let summary = match action {
        Action::Send => format!(
            "The relay publishes each {kind} as it was stored: new events at the type's \
            current schema version, older versions when stored events are sent again (a \
            repair of the broker, or the `republish` command)."
        ),
        Action::Receive => format!(
            "The durable consumer `{service}` reads each {kind} through {service}'s own view \
            of it: unknown fields are ignored, older versions are upcast step by step, and a \
            version newer than it knows is held for redelivery while it lacks a field the view \
            needs."
        ),
    };
    json!({
        "action": action.as_str(),
        "channel": { "$ref": format!("#/channels/{kind}") },
        "summary": summary,
        "messages": [],
    })
}

fn message(entry: &EventSchema, action: Action) -> Value {
    let (producer, kind, version) = (entry.producer, entry.event_type, entry.version);
    let summary = match action {
        Action::Send => format!("{kind} at schema version {version}, as {producer} writes it."),
        Action::Receive => format!(
            "{kind} at schema version {version}, written by {producer}: the fields this \
            service reads."
        ),
    };
    json!({
        "name": kind,
        "title": format!("{kind} v{version}"),
        "summary": summary,
        "contentType": cloudevents::DATA_CONTENT_TYPE,
        "headers": event_headers(entry),
        "payload": { "$ref": format!("#/components/schemas/{}", entry.schema_name) },
        "correlationId": { "$ref": "#/components/correlationIds/correlation" },
    })
}

pub(super) fn parameters(namespace: &str) -> Value {
    json!({
        "namespace": {
            "description": "The deployment's namespace (EVENTS_NAMESPACE), the first part of \
                every subject, so that several deployments can share one NATS server.",
            "default": namespace,
            "examples": [namespace],
        },
        "streamId": {
            "description": "The id of the event's stream, such as `product-<uuid>`, \
                `reservation-<order id>` or `order-<uuid>`.",
            "location": format!("$message.header#/{}", ce::SUBJECT),
        },
    })
}

/// A server per URL of `nats_url` (one, or several separated by commas), without scheme or
/// credentials.
pub(super) fn servers(nats_url: &str) -> Map<String, Value> {
    let hosts: Vec<&str> = nats_url
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(host)
        .collect();
    let unique: BTreeSet<&str> = hosts.iter().copied().collect();
    unique
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let id = if unique.len() == 1 {
                "nats".to_owned()
            } else {
                format!("nats-{}", i + 1)
            };
            let server = json!({
                "host": host,
                "protocol": "nats",
                "description": "A NATS server (JetStream) of the deployment, as this service \
                    is configured (NATS_URL).",
            });
            (id, server)
        })
        .collect()
}

/// `nats://user:password@host:4222/` as `host:4222`.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_named_without_its_scheme_or_credentials() {
        assert_eq!(host("nats://u:p@nats:4222"), "nats:4222");
        assert_eq!(host("127.0.0.1:4222"), "127.0.0.1:4222");
        let one = servers("nats://127.0.0.1:4222");
        assert_eq!(one.keys().collect::<Vec<_>>(), ["nats"]);
        let two = servers("nats://u:p@n1:4222, nats://n2:4222/,nats://n1:4222");
        assert_eq!(two.keys().collect::<Vec<_>>(), ["nats-1", "nats-2"]);
        assert_eq!(two["nats-2"]["host"], "n2:4222");
    }
}
