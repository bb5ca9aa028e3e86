//! The shape every event enum shares: the store keeps the type name beside the payload, so an
//! enum is a set of payload structs, each serialized without a tag.

/// Declares `pub enum $name { Variant(Variant), .. }` where each variant wraps the payload struct
/// of the same name, and that name is the event type on the wire.
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
            pub fn payload(&self) -> serde_json::Value {
                let value = match self {
                    $(Self::$variant(payload) => serde_json::to_value(payload),)+
                };
                // Payloads are plain structs with string keys, which serde_json always encodes.
                value.expect("event payloads always serialize to JSON")
            }

            /// Decodes a stored event; `Ok(None)` for a type name this enum does not know, so
            /// readers tolerate event types added later.
            pub fn from_stored(
                event_type: &str,
                payload: &serde_json::Value,
            ) -> Result<Option<Self>, serde_json::Error> {
                use serde::Deserialize as _;
                Ok(Some(match event_type {
                    $(stringify!($variant) => Self::$variant($variant::deserialize(payload)?),)+
                    _ => return Ok(None),
                }))
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

pub(crate) use wire_events;
