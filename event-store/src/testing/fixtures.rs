//! Golden event fixtures: one JSON file per historical schema version of every event type a
//! service stores or consumes, `<dir>/<Type>.v<N>.json`, each holding the payload as it was
//! stored at that version and what it must read as today:
//!
//! ```json
//! { "stored": { "product_id": "…", "price_cents": 1250 },
//!   "current": { "product_id": "…", "price": { "amount_minor": 1250, "currency": "USD" } } }
//! ```
//!
//! Stored events never change, so neither does a fixture's `stored`; `current` changes when
//! the type gains a version (docs/adr/0007-evolving-events.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::wire::WireEvent;

/// How a decoded event must compare with a fixture's `current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// The service that writes the events: decoded and encoded again, the event is
    /// `current` exactly (so a field renamed without a new version fails).
    Writer,
    /// A consumer's own view of the other service's events: every field it keeps is in
    /// `current` with the same value.
    View,
}

/// A directory of fixtures being checked, enum by enum ([`EventFixtures::check`]), then as a
/// whole ([`EventFixtures::finish`]).
#[derive(Debug)]
pub struct EventFixtures {
    dir: PathBuf,
    present: BTreeSet<String>,
    claimed: BTreeSet<String>,
    problems: Vec<String>,
    checked: usize,
}

impl EventFixtures {
    /// The `*.json` files of `dir`.
    pub fn open(dir: impl AsRef<Path>) -> EventFixtures {
        let dir = dir.as_ref().to_owned();
        let present = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".json"))
            .collect();
        EventFixtures {
            dir,
            present,
            claimed: BTreeSet::new(),
            problems: Vec::new(),
            checked: 0,
        }
    }

    /// Checks the fixtures of `E`'s types: one for every version 1 to current of every type
    /// (so a type cannot gain a version without a fixture of the old one), each one's
    /// `stored` payload upcast to exactly its `current` and decoded as `reader` requires.
    pub fn check<E: WireEvent>(&mut self, reader: Reader) -> &mut Self {
        for event_type in E::TYPES {
            let current = E::current_version(event_type).expect("a declared type has a version");
            for version in 1..=current {
                let name = format!("{event_type}.v{version}.json");
                if !self.present.contains(&name) {
                    self.problems.push(format!("{name} is missing"));
                    continue;
                }
                if let Err(problem) = check_one::<E>(&self.dir.join(&name), &name, reader) {
                    self.problems.push(format!("{name}: {problem}"));
                }
                self.claimed.insert(name);
                self.checked += 1;
            }
        }
        self
    }

    /// Panics listing every problem, and every fixture no checked enum has the type and
    /// version of. Returns how many fixtures were checked.
    pub fn finish(&mut self) -> usize {
        for name in self.present.difference(&self.claimed) {
            self.problems
                .push(format!("{name} is not a version of a type checked here"));
        }
        assert!(
            self.problems.is_empty(),
            "event fixtures in {}:\n  {}",
            self.dir.display(),
            self.problems.join("\n  ")
        );
        self.checked
    }
}

fn check_one<E: WireEvent>(path: &Path, name: &str, reader: Reader) -> Result<(), String> {
    let (event_type, version) = parse_name(name)?;
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let fixture: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let (Some(stored), Some(current)) = (fixture.get("stored"), fixture.get("current")) else {
        return Err("needs both `stored` and `current`".to_owned());
    };
    let upcast = E::upcast(event_type, version, stored)
        .map_err(|e| e.to_string())?
        .ok_or("unknown type")?;
    if *upcast != *current {
        return Err(format!(
            "upcasts to {upcast}, not to its `current` {current}"
        ));
    }
    let event = E::from_stored(event_type, version, stored)
        .map_err(|e| e.to_string())?
        .ok_or("unknown type")?;
    let encoded = event.payload();
    let fits = match reader {
        Reader::Writer => encoded == *current,
        Reader::View => is_within(&encoded, current),
    };
    if !fits {
        return Err(format!(
            "decodes to {encoded}, which is not its `current` {current}"
        ));
    }
    Ok(())
}

/// `<Type>.v<N>.json` as its type and version.
fn parse_name(name: &str) -> Result<(&str, i32), String> {
    let stem = name.strip_suffix(".json").unwrap_or(name);
    let (event_type, version) = stem
        .rsplit_once(".v")
        .ok_or("is not named <Type>.v<N>.json")?;
    let version = version.parse().map_err(|_| "has no version number")?;
    Ok((event_type, version))
}

/// Whether every field of `part` is in `whole` with the same value (objects recursively,
/// arrays element by element).
fn is_within(part: &Value, whole: &Value) -> bool {
    match (part, whole) {
        (Value::Object(p), Value::Object(w)) => p
            .iter()
            .all(|(key, value)| w.get(key).is_some_and(|other| is_within(value, other))),
        (Value::Array(p), Value::Array(w)) => {
            p.len() == w.len() && p.iter().zip(w).all(|(a, b)| is_within(a, b))
        }
        _ => part == whole,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_parse_and_views_fit_within_the_whole() {
        assert_eq!(parse_name("PriceChanged.v2.json"), Ok(("PriceChanged", 2)));
        assert!(parse_name("PriceChanged.json").is_err());
        let whole = json!({ "a": 1, "b": [{ "c": 2, "d": 3 }] });
        assert!(is_within(&json!({ "b": [{ "c": 2 }] }), &whole));
        assert!(!is_within(&json!({ "b": [{ "c": 3 }] }), &whole));
        assert!(!is_within(&json!({ "e": 1 }), &whole));
    }
}
