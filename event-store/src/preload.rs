//! What a consumer's batch reads up front. Its reactions declare the streams and the
//! read-model rows they will load for the batch ([`Reads`], through
//! [`crate::consumer::Reaction::reads`]); the consumer reads them in the statement that asks
//! the inbox which events are recorded (`inbox::recorded`), after the batch's locks, in its
//! transaction, and offers them back ([`Preloaded`], through
//! [`crate::consumer::Recording::preloaded`]). A reaction's load takes them from there
//! ([`crate::snapshot::load_from`], [`crate::aggregate::load_many_from`],
//! [`Preloaded::rows`]) and queries only what it did not declare: one round trip per batch
//! instead of one per reader.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::snapshot::{FoundAt, FoundRead};

/// The streams and read-model rows the reactions will load to handle a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reads {
    streams: Vec<(String, i32)>,
    /// By table and key column, the keys of the rows.
    rows: BTreeMap<(&'static str, &'static str), Vec<Uuid>>,
}

impl Reads {
    /// Declares `stream`, loaded at snapshot `schema_version` (-1: never snapshotted).
    pub fn stream(&mut self, stream: String, schema_version: i32) {
        self.streams.push((stream, schema_version));
    }

    /// Declares the rows of `table` whose `key` column (a `uuid`) is one of `ids`.
    pub fn rows(
        &mut self,
        table: &'static str,
        key: &'static str,
        ids: impl IntoIterator<Item = Uuid>,
    ) {
        let mut ids = ids.into_iter().peekable();
        if ids.peek().is_some() {
            self.rows.entry((table, key)).or_default().extend(ids);
        }
    }

    /// Each stream once.
    pub(crate) fn streams(&self) -> Vec<(&str, i32)> {
        let mut wanted: Vec<(&str, i32)> =
            self.streams.iter().map(|(s, v)| (s.as_str(), *v)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// Each table with its key column and its keys (each once), in a stable order.
    pub(crate) fn tables(&self) -> Vec<(&'static str, &'static str, Vec<Uuid>)> {
        self.rows
            .iter()
            .map(|((table, key), ids)| {
                let mut ids = ids.clone();
                ids.sort_unstable();
                ids.dedup();
                (*table, *key, ids)
            })
            .collect()
    }
}

/// A table's declared rows, as read: every declared key, and the rows found (as JSON objects,
/// `to_jsonb` of the row); a declared key without a row has none.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub declared: HashSet<Uuid>,
    pub found: HashMap<Uuid, serde_json::Value>,
}

/// What the batch's one read found of the declared streams and rows. A stream is taken once,
/// by the first load that asks for it at the schema version it was read at; rows are taken
/// by table.
#[derive(Debug, Default)]
pub struct Preloaded {
    streams: Mutex<FoundAt>,
    rows: Mutex<HashMap<&'static str, Rows>>,
}

impl Preloaded {
    pub(crate) fn new(streams: FoundAt, rows: HashMap<&'static str, Rows>) -> Self {
        Preloaded {
            streams: Mutex::new(streams),
            rows: Mutex::new(rows),
        }
    }

    pub(crate) fn take(&self, stream: &str, schema_version: i32) -> Option<FoundRead> {
        self.streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&(stream.to_owned(), schema_version))
    }

    /// The rows of `table` keyed by `ids`, by key (a key without a row is absent), when every
    /// one of `ids` was declared; `None` otherwise, and the caller queries them itself. Taken
    /// once.
    pub fn rows<R: DeserializeOwned>(
        &self,
        table: &str,
        ids: &[Uuid],
    ) -> Option<Result<HashMap<Uuid, R>, serde_json::Error>> {
        if ids.is_empty() {
            return Some(Ok(HashMap::new()));
        }
        let mut tables = self
            .rows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !ids
            .iter()
            .all(|id| tables.get(table).is_some_and(|r| r.declared.contains(id)))
        {
            return None;
        }
        let Rows { found, .. } = tables.remove(table)?;
        let wanted: HashSet<&Uuid> = ids.iter().collect();
        Some(
            found
                .into_iter()
                .filter(|(id, _)| wanted.contains(id))
                .map(|(id, row)| Ok((id, serde_json::from_value(row)?)))
                .collect(),
        )
    }
}
