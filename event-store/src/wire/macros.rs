//! [`wire_events!`](crate::wire_events): the macro that declares a service's event enum, its
//! versions and upcast steps, and implements [`super::WireEvent`] for it.

/// A version without its steps does not compile:
///
/// ```compile_fail
/// #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
/// pub struct Opened {}
/// event_store::wire_events! { AccountEvent { Opened = 2 [] } }
/// # use event_store::wire::WireEvent;
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
/// of the same name, and that name is the event type on the wire, and implements
/// [`WireEvent`](crate::wire::WireEvent) for it (its methods are the trait's: bring the trait
/// into scope to call them). A variant written
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
        }

        impl $crate::wire::WireEvent for $name {
            const TYPES: &'static [&'static str] = &[$(stringify!($variant)),+];

            fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => stringify!($variant),)+
                }
            }

            fn schema_version(&self) -> i32 {
                match self {
                    $(Self::$variant(_) => $crate::__wire_version!($($version)?),)+
                }
            }

            fn payload(&self) -> $crate::__private::serde_json::Value {
                let value = match self {
                    $(Self::$variant(payload) => $crate::__private::serde_json::to_value(payload),)+
                };
                // Payloads are plain structs with string keys, which serde_json always encodes.
                value.expect("event payloads always serialize to JSON")
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

        $(
            impl From<$variant> for $name {
                fn from(payload: $variant) -> Self {
                    Self::$variant(payload)
                }
            }
        )+
    };
}
