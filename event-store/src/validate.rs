//! What the store cannot hold or the wire must not carry, checked in one place: stream ids
//! and event type names (they become NATS subject tokens, `<prefix>.<stream id>.<event
//! type>`), and NUL characters (Postgres `text` and `jsonb` cannot store U+0000).
//!
//! The store checks appends with these; a consumer refuses a foreign event holding a NUL as
//! poison; a service's HTTP edge may check the same before it gets that far.

use crate::{NewEvent, StoreError};

/// The longest stream id, in bytes.
pub const STREAM_ID_MAX_LEN: usize = 200;
/// The longest event type name, in bytes.
pub const EVENT_TYPE_MAX_LEN: usize = 100;

/// A stream id is 1 to [`STREAM_ID_MAX_LEN`] characters of `[A-Za-z0-9_-]`.
pub fn stream_id(id: &str) -> Result<(), StoreError> {
    if token(id, STREAM_ID_MAX_LEN, &['-']) {
        Ok(())
    } else {
        Err(StoreError::InvalidStreamId(id.to_owned()))
    }
}

/// An event type name is 1 to [`EVENT_TYPE_MAX_LEN`] characters of `[A-Za-z0-9_]`.
pub fn event_type(name: &str) -> Result<(), StoreError> {
    if token(name, EVENT_TYPE_MAX_LEN, &[]) {
        Ok(())
    } else {
        Err(StoreError::InvalidEventType(name.to_owned()))
    }
}

/// Why a person-entered text is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    Empty,
    TooLong { len: usize, max: usize },
}

/// A person-entered text (a product's name, a customer id): surrounding spaces trimmed, then
/// 1 to `max` characters. The domains refuse with their own words for it.
pub fn bounded_text(text: &str, max: usize) -> Result<String, TextError> {
    let text = text.trim();
    match text.chars().count() {
        0 => Err(TextError::Empty),
        len if len > max => Err(TextError::TooLong { len, max }),
        _ => Ok(text.to_owned()),
    }
}

/// What `append` accepts: a valid stream id and at least one event, each of a valid type.
pub(crate) fn append(stream: &str, events: &[NewEvent]) -> Result<(), StoreError> {
    stream_id(stream)?;
    if events.is_empty() {
        return Err(StoreError::Empty);
    }
    events.iter().try_for_each(|e| event_type(&e.event_type))
}

fn token(text: &str, max_len: usize, extra: &[char]) -> bool {
    !text.is_empty()
        && text.len() <= max_len
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
}

/// Whether `text` holds a NUL character, which Postgres `text` cannot store.
pub fn text_has_nul(text: &str) -> bool {
    text.contains('\0')
}

/// Whether any string or object key anywhere in `value` holds a NUL character, which Postgres
/// `jsonb` cannot store.
pub fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => text_has_nul(s),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| text_has_nul(k) || json_has_nul(v))
        }
        _ => false,
    }
}

/// `text` with each NUL character replaced by U+FFFD, for storing text that must be kept
/// whatever it holds (a dead letter's error and headers).
pub fn replace_nul(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_ids_and_event_types_are_subject_tokens_of_bounded_length() {
        for ok in ["order-1", "a", "A_b-9", &"x".repeat(STREAM_ID_MAX_LEN)] {
            assert!(stream_id(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "a.b", "a b", "a*", "a>", "é", "a\0", &"x".repeat(201)] {
            assert!(stream_id(bad).is_err(), "{bad:?}");
        }
        for ok in [
            "OrderPlaced",
            "order_placed_v2",
            &"x".repeat(EVENT_TYPE_MAX_LEN),
        ] {
            assert!(event_type(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "Order-Placed", "a.b", &"x".repeat(101)] {
            assert!(event_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_nul_is_found_in_any_string_or_key_and_replaced() {
        assert!(!json_has_nul(&json!({"a": ["b", 1, null, {"c": "d"}]})));
        assert!(json_has_nul(&json!({"a": ["b", {"c": "d\u{0}"}]})));
        assert!(json_has_nul(&json!({"a\u{0}": 1})));
        assert!(text_has_nul("x\0y"));
        assert_eq!(replace_nul("x\0y"), "x\u{fffd}y");
    }
}
