//! The shape of a service's event enums: the store keeps the type name beside the payload
//! ([`crate::NewEvent`], [`crate::RecordedEvent`]), so an enum of events is a set of payload
//! structs, each serialized without a tag, and its variant names are the wire's type names.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
//! pub struct Opened { pub id: u32 }
//! #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
//! pub struct Closed {}
//!
//! event_store::wire_events! {
//!     /// Events of one account stream.
//!     AccountEvent { Opened, Closed }
//! }
//!
//! let event = AccountEvent::from(Opened { id: 7 });
//! assert_eq!(event.event_type(), "Opened");
//! assert_eq!(AccountEvent::TYPES, ["Opened", "Closed"]);
//! let back = AccountEvent::from_stored("Opened", &event.payload()).unwrap();
//! assert_eq!(back, Some(event));
//! // A type added later by another release is tolerated, not an error.
//! assert_eq!(AccountEvent::from_stored("Frozen", &serde_json::json!({})).unwrap(), None);
//! ```

/// What [`wire_events!`] gives an event enum: its stored type names and payloads, so generic
/// code (`crate::aggregate`) can store and decode any service's events.
pub trait WireEvent: Sized {
    /// Every wire name of the enum, in declaration order.
    const TYPES: &'static [&'static str];
    /// The stable type name stored beside the payload.
    fn event_type(&self) -> &'static str;
    /// The payload alone, with no type tag.
    fn payload(&self) -> serde_json::Value;
    /// Decodes a stored event; `Ok(None)` for a type name this enum does not know.
    fn from_stored(
        event_type: &str,
        payload: &serde_json::Value,
    ) -> Result<Option<Self>, serde_json::Error>;
}

/// Declares `pub enum $name { Variant(Variant), .. }` where each variant wraps the payload struct
/// of the same name, and that name is the event type on the wire.
#[macro_export]
macro_rules! wire_events {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum $name {
            $($variant($variant),)+
        }

        impl $name {
            /// Every wire name of this enum, in declaration order.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];

            /// The stable type name stored beside the payload.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => stringify!($variant),)+
                }
            }

            /// The payload alone, with no type tag.
            pub fn payload(&self) -> $crate::__private::serde_json::Value {
                let value = match self {
                    $(Self::$variant(payload) => $crate::__private::serde_json::to_value(payload),)+
                };
                // Payloads are plain structs with string keys, which serde_json always encodes.
                value.expect("event payloads always serialize to JSON")
            }

            /// Decodes a stored event; `Ok(None)` for a type name this enum does not know, so
            /// readers tolerate event types added later.
            pub fn from_stored(
                event_type: &str,
                payload: &$crate::__private::serde_json::Value,
            ) -> ::std::result::Result<Option<Self>, $crate::__private::serde_json::Error> {
                use $crate::__private::serde::Deserialize as _;
                Ok(Some(match event_type {
                    $(stringify!($variant) => Self::$variant($variant::deserialize(payload)?),)+
                    _ => return Ok(None),
                }))
            }
        }

        impl $crate::wire::WireEvent for $name {
            const TYPES: &'static [&'static str] = Self::TYPES;

            fn event_type(&self) -> &'static str {
                Self::event_type(self)
            }

            fn payload(&self) -> $crate::__private::serde_json::Value {
                Self::payload(self)
            }

            fn from_stored(
                event_type: &str,
                payload: &$crate::__private::serde_json::Value,
            ) -> ::std::result::Result<Option<Self>, $crate::__private::serde_json::Error> {
                Self::from_stored(event_type, payload)
            }
        }

        $(
            impl From<$variant> for $name {
                fn from(payload: $variant) -> Self {
                    Self::$variant(payload)
                }
            }
        )+
    };
}
