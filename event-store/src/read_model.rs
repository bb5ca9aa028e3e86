//! Read models with one row per aggregate, kept by folding events onto rows: what both
//! services' inline projections of their own aggregates are (`orders`, `products`), and
//! order-service's catalogue of product-service's products, which the consumer keeps from
//! the other service's events.
//!
//! A service says what a row is and how one event changes it ([`RowModel`]); folding a batch
//! is written once, here ([`RowBatch`]): the rows the batch continues are read in one query
//! (or taken from the consumer's one read of its batch), every event folded onto its row in
//! memory, and the changed rows written back in one statement. Each row keeps the stream
//! version it reflects, and `next_row` changes nothing for an event the row already
//! includes, so an event applied twice (a rebuild over live rows) is a no-op.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::aggregate::Fold;
use crate::projection::Projection;
use crate::wire::{DecodeError, Stored, WireEvent};
use crate::RecordedEvent;

/// A read model of one row per aggregate. Every `RowModel` of a service's own events
/// (`Recorded = RecordedEvent`) is a [`Projection`]; one of the other service's events
/// (`Recorded = ForeignEvent`) runs in the consumer, folding with [`RowBatch`].
pub trait RowModel: Send + Sync + 'static {
    /// The projection's name: its checkpoint and the name it is rebuilt under.
    const NAME: &'static str;
    /// The tables it writes, which a rebuild builds afresh.
    const TABLES: &'static [&'static str];
    /// The events it reads; event types it does not know are skipped.
    type Event: WireEvent + Send + Sync;
    /// The events as they come: read from this service's store, or received from the other.
    type Recorded: Stored + Sync;
    type Row: Send;

    /// The aggregate an event belongs to, the key of its row; `None` for an event of no
    /// row (it changes nothing).
    fn key(event: &Self::Event) -> Option<Uuid>;
    fn row_key(row: &Self::Row) -> Uuid;
    /// Whether `event` is the first of its stream, so its row folds from nothing and need
    /// not be read.
    fn starts_stream(event: &Self::Event, recorded: &Self::Recorded) -> bool;
    /// The row `event` makes of `current`, or `None` when it changes nothing (the row
    /// already includes it). An error when the event cannot apply (a bug elsewhere).
    fn next_row(
        current: Option<&Self::Row>,
        event: &Self::Event,
        recorded: &Self::Recorded,
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

/// A batch of events decoded for the row model `M`, in order: the keys of the rows it
/// continues ([`RowBatch::keys`]), then the fold onto them ([`RowBatch::fold`]). Where the
/// rows come from and where the changed ones go is the caller's: [`apply_rows`] reads and
/// writes them itself; the consumer preloads them and writes them with its batch.
pub struct RowBatch<'e, M: RowModel> {
    decoded: Vec<(M::Event, Uuid, &'e M::Recorded)>,
}

impl<'e, M: RowModel> RowBatch<'e, M> {
    /// Decodes `events`, leaving out those of a type `M` does not know and those of no row.
    /// An event that does not decode fails the batch, and is returned with the error.
    pub fn decode(
        events: impl IntoIterator<Item = &'e M::Recorded>,
    ) -> Result<Self, (DecodeError, &'e M::Recorded)> {
        let mut decoded = Vec::new();
        for recorded in events {
            match M::Event::decode(recorded) {
                Ok(Some(event)) => {
                    if let Some(key) = M::key(&event) {
                        decoded.push((event, key, recorded));
                    }
                }
                Ok(None) => {}
                Err(e) => return Err((e, recorded)),
            }
        }
        Ok(RowBatch { decoded })
    }

    /// Whether no event of the batch changes a row.
    pub fn is_empty(&self) -> bool {
        self.decoded.is_empty()
    }

    /// The keys of the rows the fold continues, each once, in first-touch order.
    ///
    /// An aggregate whose first event here starts its stream folds from nothing, so its row
    /// is not read: if it is stored already, the version-guarded write leaves it unless this
    /// batch takes it further, and then the fold from the stream's start is the right row.
    pub fn keys(&self) -> Vec<Uuid> {
        let mut first_seen = HashSet::new();
        self.decoded
            .iter()
            .filter(|(event, key, recorded)| {
                first_seen.insert(*key) && !M::starts_stream(event, recorded)
            })
            .map(|(_, key, _)| *key)
            .collect()
    }

    /// Folds every event onto its row of `rows` (the stored rows of [`RowBatch::keys`], by
    /// key) and returns the rows that changed, each once, in first-touch order, so the
    /// write is deterministic.
    pub fn fold(self, mut rows: HashMap<Uuid, M::Row>) -> anyhow::Result<Vec<M::Row>> {
        let mut changed: Vec<Uuid> = Vec::new();
        let mut seen: HashSet<Uuid> = HashSet::new();
        for (event, key, recorded) in &self.decoded {
            if let Some(row) = M::next_row(rows.get(key), event, recorded)? {
                if seen.insert(*key) {
                    changed.push(*key);
                }
                rows.insert(*key, row);
            }
        }
        Ok(changed.iter().filter_map(|key| rows.remove(key)).collect())
    }
}

/// The stored rows of `keys` ([`RowModel::load`]), by key, as [`RowBatch::fold`] takes
/// them; no round trip for an empty key list (a batch that only starts streams).
pub async fn load_rows<M: RowModel>(
    conn: &mut PgConnection,
    keys: &[Uuid],
) -> Result<HashMap<Uuid, M::Row>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let loaded = M::load(conn, keys).await?;
    Ok(loaded.into_iter().map(|r| (M::row_key(&r), r)).collect())
}

/// Applies events in position order with one read and one write.
pub async fn apply_rows<M: RowModel>(
    conn: &mut PgConnection,
    events: &[M::Recorded],
) -> anyhow::Result<()> {
    let batch = RowBatch::<M>::decode(events).map_err(|(e, recorded)| {
        anyhow::Error::new(e).context(format!(
            "{} version {} does not decode",
            recorded.stream_id(),
            recorded.stream_version()
        ))
    })?;
    if batch.is_empty() {
        return Ok(());
    }
    // No FOR UPDATE: one writer applies a batch at a time (appends to one stream are
    // serialised by its versions; a rebuild's shadow tables have one writer), and row locks
    // would cost a heap write per row. A batch that only starts streams (a command creating
    // an aggregate) reads nothing (`load_rows`).
    let rows = load_rows::<M>(conn, &batch.keys())
        .await
        .with_context(|| format!("reading {}", M::NAME))?;
    let changed = batch.fold(rows)?;
    if changed.is_empty() {
        return Ok(());
    }
    M::upsert(conn, changed)
        .await
        .with_context(|| format!("writing {}", M::NAME))
}

impl<M: RowModel<Recorded = RecordedEvent>> Projection for M {
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
