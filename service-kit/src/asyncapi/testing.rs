//! The checks each service runs on its AsyncAPI contract (feature `testing`): that it lists
//! exactly the versions its event enums declare, each with the type that writes or reads it
//! ([`assert_lists`]), and that every golden fixture fits the payload schema the document
//! gives it while broken copies of it do not ([`check_fixtures`]).

use std::collections::BTreeMap;
use std::path::Path;

use event_store::cloudevents;
use serde_json::Value;

use super::{message_key, payload_schema, Document, EventSchema};

/// Panics unless `entries` are exactly the `declared` (type, version) pairs, in that order
/// ([`super::versions`] of the service's enums), with each type's newest version shaped as the
/// enum's own struct of that name and each older one as `<Type>V<n>`, the struct its upcast
/// step reads.
pub fn assert_lists(entries: &[EventSchema], declared: &[(&str, i32)]) {
    let listed: Vec<(&str, i32)> = entries.iter().map(|e| (e.event_type, e.version)).collect();
    assert_eq!(listed, declared, "the contract's types and versions");
    let mut newest = BTreeMap::new();
    for (event_type, version) in declared {
        let known = newest.entry(*event_type).or_insert(*version);
        *known = (*known).max(*version);
    }
    for entry in entries {
        let expected = if newest.get(entry.event_type) == Some(&entry.version) {
            entry.event_type.to_owned()
        } else {
            format!("{}V{}", entry.event_type, entry.version)
        };
        assert_eq!(
            entry.schema_name,
            expected,
            "the type of {}",
            entry.message_key()
        );
    }
}

/// Checks every golden fixture `<dir>/<Type>.v<N>.json` against `document`: its `stored`
/// payload fits the payload schema of the message whose `ce-dataschema` names that type and
/// version (written by the producer `entries` give it), and copies of it without a field that
/// schema requires, or with a field it names set to `true` (no field's type), do not. Panics
/// listing every problem; returns how many fixtures were checked.
pub fn check_fixtures(document: &Document, entries: &[EventSchema], dir: &Path) -> usize {
    let producers: BTreeMap<String, &str> = entries
        .iter()
        .map(|e| (e.message_key(), e.producer))
        .collect();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut problems = Vec::new();
    for path in &paths {
        if let Err(problem) = check_one(&document.0, &producers, path) {
            problems.push(format!("{}: {problem}", path.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "golden fixtures against the AsyncAPI document:\n  {}",
        problems.join("\n  ")
    );
    paths.len()
}

fn check_one(doc: &Value, producers: &BTreeMap<String, &str>, path: &Path) -> Result<(), String> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let (event_type, version) = stem
        .rsplit_once(".v")
        .ok_or("is not named <Type>.v<N>.json")?;
    let version: i32 = version.parse().map_err(|_| "has no version number")?;
    let producer = producers
        .get(&message_key(event_type, version))
        .ok_or("no entry of the contract has its type and version")?;
    let urn = cloudevents::dataschema(producer, event_type, version);
    let schema =
        payload_schema(doc, &urn).ok_or_else(|| format!("no message has ce-dataschema {urn}"))?;
    let validator = jsonschema::draft7::new(&schema)
        .map_err(|e| format!("the schema of {urn} does not compile: {e}"))?;
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let fixture: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let stored = fixture.get("stored").ok_or("has no `stored`")?;
    let errors: Vec<String> = validator
        .iter_errors(stored)
        .map(|e| e.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(format!(
            "`stored` does not fit {urn}: {}",
            errors.join("; ")
        ));
    }
    for (change, copy) in broken_copies(stored, &schema)? {
        if validator.is_valid(&copy) {
            return Err(format!("`stored` {change} still fits {urn}"));
        }
    }
    Ok(())
}

/// `stored` without each field its schema requires, and with each field the schema names set
/// to `true`; each with what was changed.
fn broken_copies(stored: &Value, schema: &Value) -> Result<Vec<(String, Value)>, String> {
    let pointer = schema
        .pointer("/allOf/0/$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .ok_or("the payload is not a reference to a component schema")?;
    let component = schema
        .pointer(pointer)
        .ok_or_else(|| format!("{pointer} does not resolve"))?;
    let required: Vec<&str> = component["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if required.is_empty() {
        return Err(format!("{pointer} requires no field"));
    }
    let mut copies = Vec::new();
    for field in required {
        let mut copy = stored.clone();
        if let Some(object) = copy.as_object_mut() {
            object.remove(field);
        }
        copies.push((format!("without `{field}`"), copy));
    }
    let named = component["properties"].as_object().into_iter().flatten();
    for (field, _) in named.filter(|(field, _)| stored.get(field.as_str()).is_some()) {
        let mut copy = stored.clone();
        copy[field.as_str()] = Value::Bool(true);
        copies.push((format!("with `{field}` = true"), copy));
    }
    Ok(copies)
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "allOf": [{ "$ref": "#/components/schemas/Opened" }],
            "components": { "schemas": {
                "Opened": {
                    "type": "object",
                    "required": ["id", "price"],
                    "properties": {
                        "id": { "type": "string" },
                        "price": { "$ref": "#/components/schemas/Price" },
                        "note": { "type": ["string", "null"] },
                    },
                },
                "Price": {
                    "type": "object",
                    "required": ["cents"],
                    "properties": { "cents": { "type": "integer" } },
                },
            }},
        })
    }

    #[test]
    fn references_resolve_and_every_broken_copy_is_refused() {
        let schema = schema();
        let validator = jsonschema::draft7::new(&schema).unwrap();
        let stored = json!({ "id": "a", "price": { "cents": 5 }, "extra": 1 });
        assert!(validator.is_valid(&stored));
        assert!(!validator.is_valid(&json!({ "id": "a", "price": { "cents": "5" } })));
        let copies = broken_copies(&stored, &schema).unwrap();
        let mut changes: Vec<&str> = copies.iter().map(|(c, _)| c.as_str()).collect();
        changes.sort_unstable();
        assert_eq!(
            changes,
            [
                "with `id` = true",
                "with `price` = true",
                "without `id`",
                "without `price`"
            ]
        );
        assert!(copies.iter().all(|(_, copy)| !validator.is_valid(copy)));
    }
}
