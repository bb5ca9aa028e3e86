//! The shape of a service's event enums, and how stored events outlive the code that wrote
//! them (docs/adr/0007-evolving-events.md).
//!
//! The store keeps the type name and a schema version beside the payload
//! ([`crate::NewEvent`], [`crate::RecordedEvent`]), so an enum of events is a set of payload
//! structs, each serialized without a tag, and its variant names are the wire's type names.
//! Each type has a current schema version (1 unless the enum says otherwise) and, for every
//! older one, a [`Step`]: a pure function on the JSON payload from version `n` to `n + 1`.
//! Every reader decodes through [`WireEvent::decode`], which upcasts step by step, so folds,
//! projections, replays and the other service's consumer all read every version alike; new
//! events are always written at the current version ([`WireEvent::schema_version`]).
//!
//! A version newer than the reader knows (a rolling upgrade: the writer is ahead) is read
//! tolerantly: unknown fields are ignored, and only when a field the reader needs is missing
//! is it [`DecodeError::TooNew`], which a consumer holds for redelivery rather than
//! dead-letter at once. A version it can never read is [`DecodeError::Unreadable`].
//!
//! ```
//! use event_store::wire::WireEvent as _;
//! use serde::{Deserialize, Serialize};
//! use serde_json::{json, Value};
//!
//! #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
//! pub struct Opened { pub id: u32, pub owner: String }
//! #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
//! pub struct Closed {}
//!
//! /// Version 1 called the owner `holder`.
//! fn holder_to_owner(payload: Value) -> Result<Value, String> {
//!     event_store::wire::rename(payload, "holder", "owner")
//! }
//!
//! event_store::wire_events! {
//!     /// Events of one account stream.
//!     AccountEvent { Opened = 2 [holder_to_owner], Closed }
//! }
//!
//! let event = AccountEvent::from(Opened { id: 7, owner: "ann".into() });
//! assert_eq!((event.event_type(), event.schema_version()), ("Opened", 2));
//! assert_eq!(AccountEvent::TYPES, ["Opened", "Closed"]);
//! let old = json!({ "id": 7, "holder": "ann" });
//! assert_eq!(AccountEvent::from_stored("Opened", 1, &old).unwrap(), Some(event.clone()));
//! assert_eq!(AccountEvent::from_stored("Opened", 2, &event.payload()).unwrap(), Some(event));
//! // A type added later by another release is tolerated, not an error.
//! assert_eq!(AccountEvent::from_stored("Frozen", 1, &json!({})).unwrap(), None);
//! // A newer version is read for the fields this code knows...
//! let newer = json!({ "id": 7, "owner": "ann", "branch": "north" });
//! assert!(AccountEvent::from_stored("Opened", 3, &newer).unwrap().is_some());
//! // ...and is `TooNew` only when one it needs is missing.
//! let err = AccountEvent::from_stored("Opened", 3, &json!({ "id": 7 })).unwrap_err();
//! assert!(err.is_too_new());
//! ```

use std::borrow::Cow;

use serde_json::Value;

use crate::envelope::ForeignEvent;
use crate::RecordedEvent;

mod macros;

/// One upcasting step of an event type: its payload at version `n` to version `n + 1`. Pure:
/// no clock, no IO, no configuration, so every reader at every time reads an event alike. An
/// `Err` names what the old payload lacks; such an event can never be read.
pub type Step = fn(Value) -> Result<Value, String>;

/// Why a stored or received event cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No release of this code will read it: a version below 1, an old payload an upcast step
    /// refuses, or a known version whose payload does not fit its type.
    #[error("{event_type} schema version {version} cannot be read (this code reads versions 1 to {current}): {reason}")]
    Unreadable {
        event_type: String,
        version: i32,
        current: i32,
        reason: String,
    },
    /// Written by a newer release and missing a field this code needs: readable once this
    /// service is upgraded, so it is held, not dropped.
    #[error("{event_type} schema version {version} is newer than version {current}, the newest this code knows, and lacks what it needs: {reason}")]
    TooNew {
        event_type: String,
        version: i32,
        current: i32,
        reason: String,
    },
}

impl DecodeError {
    pub fn is_too_new(&self) -> bool {
        matches!(self, DecodeError::TooNew { .. })
    }
}

/// What every stored or received event offers a decoder (its type, schema version and
/// payload) and a read model folding it onto its stream's row (`crate::read_model`): its
/// stream and its version there.
pub trait Stored {
    fn stream_id(&self) -> &str;
    fn stream_version(&self) -> i64;
    fn event_type(&self) -> &str;
    fn schema_version(&self) -> i32;
    fn payload(&self) -> &Value;
}

impl Stored for RecordedEvent {
    fn stream_id(&self) -> &str {
        &self.stream_id
    }
    fn stream_version(&self) -> i64 {
        self.stream_version
    }
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn schema_version(&self) -> i32 {
        self.schema_version
    }
    fn payload(&self) -> &Value {
        &self.payload
    }
}

impl Stored for ForeignEvent {
    fn stream_id(&self) -> &str {
        &self.stream_id
    }
    fn stream_version(&self) -> i64 {
        self.stream_version
    }
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn schema_version(&self) -> i32 {
        self.schema_version
    }
    fn payload(&self) -> &Value {
        &self.payload
    }
}

/// What [`wire_events!`] gives an event enum: its stored type names, versions and payloads,
/// so generic code (`crate::aggregate`, `crate::read_model`, the fixture checks of
/// `crate::testing`) can store and decode any service's events.
pub trait WireEvent: Sized {
    /// Every wire name of the enum, in declaration order.
    const TYPES: &'static [&'static str];
    /// The stable type name stored beside the payload.
    fn event_type(&self) -> &'static str;
    /// The schema version this event is written at: its type's current one.
    fn schema_version(&self) -> i32;
    /// The payload alone, with no type tag, at the current version.
    fn payload(&self) -> Value;
    /// The current schema version of a type name; `None` for one this enum does not know.
    fn current_version(event_type: &str) -> Option<i32>;
    /// A stored payload upcast to its type's current version; `Ok(None)` for a type name
    /// this enum does not know. A newer version is passed through as it is.
    fn upcast<'a>(
        event_type: &str,
        version: i32,
        payload: &'a Value,
    ) -> Result<Option<Cow<'a, Value>>, DecodeError>;
    /// Decodes a stored event of any version; `Ok(None)` for a type name this enum does not
    /// know, so readers tolerate event types added later.
    fn from_stored(
        event_type: &str,
        version: i32,
        payload: &Value,
    ) -> Result<Option<Self>, DecodeError>;

    /// [`WireEvent::from_stored`] on a stored or received event.
    fn decode(event: &impl Stored) -> Result<Option<Self>, DecodeError> {
        Self::from_stored(event.event_type(), event.schema_version(), event.payload())
    }
}

/// `payload` (of `event_type` at `version`) at version `current`, through `steps` (`steps[n -
/// 1]` takes version `n` to `n + 1`). The payload is borrowed when nothing had to change.
pub fn upcast<'a>(
    event_type: &str,
    version: i32,
    current: i32,
    steps: &[Step],
    payload: &'a Value,
) -> Result<Cow<'a, Value>, DecodeError> {
    if version >= current {
        return Ok(Cow::Borrowed(payload));
    }
    let unreadable = |reason: String| DecodeError::Unreadable {
        event_type: event_type.to_owned(),
        version,
        current,
        reason,
    };
    if version < 1 {
        return Err(unreadable("no such version".to_owned()));
    }
    let mut value = payload.clone();
    for (from, step) in (version..current).zip(&steps[(version - 1) as usize..]) {
        value =
            step(value).map_err(|reason| unreadable(format!("upcasting from {from}: {reason}")))?;
    }
    Ok(Cow::Owned(value))
}

/// A payload that does not deserialize after upcasting: it needs a newer reader when it is
/// newer than `current`, and can never be read otherwise.
pub fn decode_error(
    event_type: &str,
    version: i32,
    current: i32,
    error: serde_json::Error,
) -> DecodeError {
    let (event_type, reason) = (event_type.to_owned(), error.to_string());
    if version > current {
        DecodeError::TooNew {
            event_type,
            version,
            current,
            reason,
        }
    } else {
        DecodeError::Unreadable {
            event_type,
            version,
            current,
            reason,
        }
    }
}

/// A step that renames a field (`from` to `to`), the commonest change.
pub fn rename(mut payload: Value, from: &str, to: &str) -> Result<Value, String> {
    let object = object(&mut payload)?;
    let value = object
        .remove(from)
        .ok_or_else(|| format!("missing field `{from}`"))?;
    object.insert(to.to_owned(), value);
    Ok(payload)
}

/// The payload as a JSON object, which every event payload is.
pub fn object(payload: &mut Value) -> Result<&mut serde_json::Map<String, Value>, String> {
    payload
        .as_object_mut()
        .ok_or_else(|| "the payload is not a JSON object".to_owned())
}

/// An old payload as its version's type, for a step; serde's error (`missing field `x``)
/// when it does not fit.
pub fn read_as<T: serde::de::DeserializeOwned>(payload: Value) -> Result<T, String> {
    serde_json::from_value(payload).map_err(|e| e.to_string())
}

/// The next version's payload, from its type.
pub fn write_as(next: impl serde::Serialize) -> Result<Value, String> {
    serde_json::to_value(next).map_err(|e| e.to_string())
}

/// `other` (an old payload's fields a step keeps as they are) with `fields` set.
pub fn with_fields<const N: usize>(
    mut other: serde_json::Map<String, Value>,
    fields: [(&str, Value); N],
) -> Value {
    for (name, value) in fields {
        other.insert(name.to_owned(), value);
    }
    Value::Object(other)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn add_b(mut payload: Value) -> Result<Value, String> {
        object(&mut payload)?.insert("b".into(), json!(0));
        Ok(payload)
    }

    fn b_to_c(payload: Value) -> Result<Value, String> {
        rename(payload, "b", "c")
    }

    const STEPS: &[Step] = &[add_b, b_to_c];

    #[test]
    fn steps_run_in_order_from_the_stored_version() {
        let v1 = json!({ "a": 1 });
        let up = upcast("T", 1, 3, STEPS, &v1).unwrap();
        assert_eq!(*up, json!({ "a": 1, "c": 0 }));
        let v2 = json!({ "a": 1, "b": 5 });
        assert_eq!(
            *upcast("T", 2, 3, STEPS, &v2).unwrap(),
            json!({ "a": 1, "c": 5 })
        );
        let v3 = json!({ "a": 1, "c": 5 });
        assert!(matches!(
            upcast("T", 3, 3, STEPS, &v3).unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_version_below_one_or_a_refused_step_is_unreadable() {
        let err = upcast("T", 0, 3, STEPS, &json!({})).unwrap_err();
        assert!(!err.is_too_new());
        assert!(err.to_string().contains("versions 1 to 3"), "{err}");
        let err = upcast("T", 2, 3, STEPS, &json!({ "a": 1 })).unwrap_err();
        assert!(err.to_string().contains("missing field `b`"), "{err}");
        assert!(upcast("T", 1, 3, STEPS, &json!([1])).is_err());
    }

    #[test]
    fn a_newer_version_passes_through_and_fails_as_too_new() {
        let v4 = json!({ "x": 1 });
        assert!(matches!(
            upcast("T", 4, 3, STEPS, &v4).unwrap(),
            Cow::Borrowed(_)
        ));
        let e = serde_json::from_value::<u8>(json!("x")).unwrap_err();
        assert!(decode_error("T", 4, 3, e).is_too_new());
        let e = serde_json::from_value::<u8>(json!("x")).unwrap_err();
        assert!(!decode_error("T", 3, 3, e).is_too_new());
    }
}
