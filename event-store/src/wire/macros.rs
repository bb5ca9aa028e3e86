//! [`wire_events!`](crate::wire_events): the macro that declares a service's event enum, its
//! versions and upcast steps, and implements [`super::WireEvent`] for it.

/// A version without its steps does not compile:
///
/// ```compile_fail
/// #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
/// pub struct Opened {}
/// event_store::wire_events! { AccountEvent { Opened = 2 [] } }
/// # fn main() { let _ = AccountEvent::from_stored("Opened", 1, &serde_json::json!({})); }
/// ```
///
/// The version of a variant declared without one.
#[doc(hidden)]
#[macro_export]
macro_rules! __wire_version {
    () => {
        1
    };
    ($version:literal) => {
        $version
    };
}

/// Declares `pub enum $name { Variant(Variant), .. }` where each variant wraps the payload struct
/// of the same name, and that name is the event type on the wire. A variant written
/// `Variant = 3 [step_1_to_2, step_2_to_3]` is at schema version 3 and lists the [`Step`]s
/// from each older version (checked at compile time: one per older version); a variant
/// written alone is at version 1.
#[macro_export]
macro_rules! wire_events {
    ($(#[$meta:meta])* $name:ident {
        $($variant:ident $(= $version:literal [$($step:path),* $(,)?])?),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum $name {
            $($variant($variant),)+
        }

        impl $name {
            /// Every wire name of this enum, in declaration order.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];

            /// Each type's current version and its upcasting steps.
            fn __schema(event_type: &str) -> Option<(i32, &'static [$crate::wire::Step])> {
                match event_type {
                    $(stringify!($variant) => {
                        const VERSION: i32 = $crate::__wire_version!($($version)?);
                        const STEPS: &[$crate::wire::Step] = &[$($($step),*)?];
                        const _: () = assert!(
                            STEPS.len() as i32 == VERSION - 1,
                            "an event type needs one upcast step per version before its current one"
                        );
                        Some((VERSION, STEPS))
                    })+
                    _ => None,
                }
            }

            /// The stable type name stored beside the payload.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => stringify!($variant),)+
                }
            }

            /// The schema version this event is written at: its type's current one.
            pub fn schema_version(&self) -> i32 {
                match self {
                    $(Self::$variant(_) => $crate::__wire_version!($($version)?),)+
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

            /// Decodes a stored event of any version (upcast first); `Ok(None)` for a type
            /// name this enum does not know, so readers tolerate event types added later.
            pub fn from_stored(
                event_type: &str,
                version: i32,
                payload: &$crate::__private::serde_json::Value,
            ) -> ::std::result::Result<Option<Self>, $crate::wire::DecodeError> {
                use $crate::__private::serde::Deserialize as _;
                let Some((current, steps)) = Self::__schema(event_type) else {
                    return Ok(None);
                };
                let payload = $crate::wire::upcast(event_type, version, current, steps, payload)?;
                let fail = |e| $crate::wire::decode_error(event_type, version, current, e);
                Ok(Some(match event_type {
                    $(stringify!($variant) => {
                        Self::$variant($variant::deserialize(&*payload).map_err(fail)?)
                    })+
                    _ => return Ok(None),
                }))
            }
        }

        impl $name {
            /// [`Self::from_stored`] on a stored or received event.
            pub fn decode(
                event: &impl $crate::wire::Stored,
            ) -> ::std::result::Result<Option<Self>, $crate::wire::DecodeError> {
                use $crate::wire::Stored as _;
                Self::from_stored(event.event_type(), event.schema_version(), event.payload())
            }
        }

        impl $crate::wire::WireEvent for $name {
            const TYPES: &'static [&'static str] = Self::TYPES;

            fn event_type(&self) -> &'static str {
                Self::event_type(self)
            }

            fn schema_version(&self) -> i32 {
                Self::schema_version(self)
            }

            fn payload(&self) -> $crate::__private::serde_json::Value {
                Self::payload(self)
            }

            fn current_version(event_type: &str) -> Option<i32> {
                Self::__schema(event_type).map(|(version, _)| version)
            }

            fn upcast<'a>(
                event_type: &str,
                version: i32,
                payload: &'a $crate::__private::serde_json::Value,
            ) -> ::std::result::Result<
                Option<::std::borrow::Cow<'a, $crate::__private::serde_json::Value>>,
                $crate::wire::DecodeError,
            > {
                let Some((current, steps)) = Self::__schema(event_type) else {
                    return Ok(None);
                };
                $crate::wire::upcast(event_type, version, current, steps, payload).map(Some)
            }

            fn from_stored(
                event_type: &str,
                version: i32,
                payload: &$crate::__private::serde_json::Value,
            ) -> ::std::result::Result<Option<Self>, $crate::wire::DecodeError> {
                Self::from_stored(event_type, version, payload)
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
