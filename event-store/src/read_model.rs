//! Read models with one row per aggregate, kept by folding events onto rows: what both
//! services' inline projections of their own aggregates are (`orders`, `products`).
//!
//! A service says what a row is and how one event changes it ([`RowModel`]); applying a batch
//! is written once, here: the rows the batch continues are loaded in one query, every event
//! folded onto its row in memory, and the changed rows written back in one statement. Each
//! row keeps the stream version it reflects, and `next_row` changes nothing for an event the
//! row already includes, so an event applied twice (a rebuild over live rows) is a no-op.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::aggregate::Fold;
use crate::projection::Projection;
use crate::wire::WireEvent;
use crate::RecordedEvent;

/// A read model of one row per aggregate. Every `RowModel` is a [`Projection`].
pub trait RowModel: Send + Sync + 'static {
    /// The projection's name: its checkpoint and the name it is rebuilt under.
    const NAME: &'static str;
    /// The tables it writes, which a rebuild builds afresh.
    const TABLES: &'static [&'static str];
    /// The events it reads; event types it does not know are skipped.
    type Event: WireEvent + Send + Sync;
    type Row: Send;

    /// The aggregate an event belongs to: the key of its row.
    fn key(event: &Self::Event) -> Uuid;
    fn row_key(row: &Self::Row) -> Uuid;
    /// Whether `event` is the first of its stream, so its row folds from nothing and need
    /// not be read.
    fn starts_stream(event: &Self::Event, recorded: &RecordedEvent) -> bool;
    /// The row `event` makes of `current`, or `None` when it changes nothing (the row
    /// already includes it). An error when the event cannot apply (a bug elsewhere).
    fn next_row(
        current: Option<&Self::Row>,
        event: &Self::Event,
        recorded: &RecordedEvent,
    ) -> anyhow::Result<Option<Self::Row>>;
    /// The stored rows of these aggregates (those that have one).
    fn load<'a>(
        conn: &'a mut PgConnection,
        keys: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Self::Row>, sqlx::Error>>;
    /// Inserts rows, or replaces stored rows of a lower version, in one statement.
    fn upsert(
        conn: &mut PgConnection,
        rows: Vec<Self::Row>,
    ) -> BoxFuture<'_, Result<(), sqlx::Error>>;
}

/// Applies events in position order with one read and one write.
pub async fn apply_rows<M: RowModel>(
    conn: &mut PgConnection,
    events: &[RecordedEvent],
) -> anyhow::Result<()> {
    let mut decoded = Vec::with_capacity(events.len());
    for recorded in events {
        let event = M::Event::decode(recorded).with_context(|| {
            format!(
                "{} version {} does not decode",
                recorded.stream_id, recorded.stream_version
            )
        })?;
        if let Some(event) = event {
            decoded.push((event, recorded));
        }
    }
    if decoded.is_empty() {
        return Ok(());
    }
    // An aggregate whose first event here starts its stream folds from nothing, so its row
    // is not read: if it is stored already, the version-guarded write leaves it unless this
    // batch takes it further, and then the fold from the stream's start is the right row.
    let mut first_seen = HashSet::new();
    let keys: Vec<Uuid> = decoded
        .iter()
        .filter(|(event, recorded)| {
            first_seen.insert(M::key(event)) && !M::starts_stream(event, recorded)
        })
        .map(|(event, _)| M::key(event))
        .collect();
    // No FOR UPDATE: one writer applies a batch at a time (appends to one stream are
    // serialised by its versions; a rebuild's shadow tables have one writer), and row locks
    // would cost a heap write per row. A batch that only starts streams (a command creating
    // an aggregate) reads nothing: no round trip for an empty key list.
    let loaded = if keys.is_empty() {
        Vec::new()
    } else {
        M::load(conn, &keys)
            .await
            .with_context(|| format!("reading {}", M::NAME))?
    };
    let mut rows: HashMap<Uuid, M::Row> = loaded.into_iter().map(|r| (M::row_key(&r), r)).collect();
    // First-touch order, so the write is deterministic.
    let mut changed: Vec<Uuid> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for (event, recorded) in &decoded {
        let key = M::key(event);
        if let Some(row) = M::next_row(rows.get(&key), event, recorded)? {
            if seen.insert(key) {
                changed.push(key);
            }
            rows.insert(key, row);
        }
    }
    let changed: Vec<M::Row> = changed.iter().filter_map(|key| rows.remove(key)).collect();
    if changed.is_empty() {
        return Ok(());
    }
    M::upsert(conn, changed)
        .await
        .with_context(|| format!("writing {}", M::NAME))
}

impl<M: RowModel> Projection for M {
    fn name(&self) -> &str {
        M::NAME
    }

    fn tables(&self) -> &[&str] {
        M::TABLES
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(apply_rows::<M>(tx, std::slice::from_ref(event)))
    }

    fn apply_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(apply_rows::<M>(tx, events))
    }
}

/// A [`RowModel`] of an aggregate's own stream whose row is a function of the aggregate's
/// state, so a command computes it from the state it decided on and writes it in its
/// append's statement ([`crate::store::CommandSql`]), without reading the stored row. The
/// row must be the one [`RowModel::next_row`] folds from the same events (the rebuild
/// tests compare them).
pub trait StateRow<A: Fold>: RowModel {
    /// The row of aggregate `id` as `state`, at stream `version`, as JSON keyed by column;
    /// columns the upsert fills itself (times: the statement's `now()`, which is the events'
    /// `recorded_at`) may be left out.
    fn state_row(id: Uuid, state: &A::State, version: i64) -> serde_json::Value;

    /// Inserts the one row of the relation `{input}` (a column `data jsonb`), or replaces a
    /// stored row of a lower version.
    const UPSERT: &'static str;
}

/// How a command writes one inline read model's row (see [`StateRow`]).
pub struct InlineRow<A: Fold> {
    name: &'static str,
    row: fn(Uuid, &A::State, i64) -> serde_json::Value,
    upsert: &'static str,
}

impl<A: Fold> InlineRow<A> {
    /// The row of the read model `M`.
    pub fn of<M: StateRow<A>>() -> Self {
        InlineRow {
            name: M::NAME,
            row: M::state_row,
            upsert: M::UPSERT,
        }
    }

    /// The read model's name, as its projection's.
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn upsert(&self) -> &'static str {
        self.upsert
    }

    pub fn row(&self, id: Uuid, state: &A::State, version: i64) -> serde_json::Value {
        (self.row)(id, state, version)
    }
}

impl<A: Fold> Clone for InlineRow<A> {
    fn clone(&self) -> Self {
        InlineRow { ..*self }
    }
}

/// How a read model's rows are written from JSON, in one statement: its name (as its
/// projection's) and an upsert reading its rows from a relation it names `{input}` (a column
/// `data jsonb`, one row each), inserting rows or replacing stored rows of a lower version
/// ([`StateRow::UPSERT`] is one). A projection of foreign events that the consumer runs
/// (order-service's catalogue) leaves its rows with it ([`crate::consumer::Recording::defer`]),
/// so they are written in the statement that writes the batch's inbox rows rather than in a
/// round trip of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowUpsert {
    pub name: &'static str,
    pub sql: &'static str,
}

impl RowUpsert {
    /// The statement that writes the rows bound, as one `jsonb[]`, at parameter `param`, with
    /// the upserts of `upserts` each reading its own array, from `param` on: common table
    /// expressions, to follow a `WITH` or a comma, and a final `SELECT 1`.
    pub(crate) fn ctes(upserts: &[RowUpsert], param: usize) -> String {
        let sql: Vec<&str> = upserts.iter().map(|u| u.sql).collect();
        let mut ctes = crate::store::row_ctes(&sql, param, crate::store::ROWS_INPUT, "");
        ctes.push_str("\nSELECT 1");
        ctes
    }

    /// Writes `rows` on `conn`, in one statement.
    pub async fn write(
        &self,
        conn: &mut PgConnection,
        rows: &[serde_json::Value],
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = format!("WITH {}", Self::ctes(std::slice::from_ref(self), 1));
        sqlx::query(&sql).bind(rows).execute(conn).await?;
        Ok(())
    }
}
