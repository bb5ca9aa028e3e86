//! [`BatchAppend`]: what a reaction's batch appends ("these streams, at these versions, get
//! these events"), with the snapshots and inline read model rows of the aggregates it took
//! further, written in one statement ([`BatchSql`]) on the consumer's transaction. Both sagas
//! write through it.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgConnection;
use uuid::Uuid;

use super::{to_new_events, Fold, Loaded};
use crate::inbox::Recording;
use crate::read_model::{InlineRow, RowUpsert};
use crate::snapshot::BatchSnapshot;
use crate::store::BatchSql;
use crate::{AppendResult, EventStore, Metadata, StoreError, StreamAppend};

/// The statement a reaction on `store` writes its batches with: beside the events, the rows
/// of those read models of `rows` that are inline projections of the store (the others are
/// not the store's to write), and of the rows deferred to it for `deferred`
/// ([`Recording::defer`]). Build it once, when the reaction is built.
pub fn batch_sql<A: Fold>(
    store: &EventStore,
    rows: &[InlineRow<A>],
    deferred: &[RowUpsert],
) -> Arc<BatchSql> {
    let inline = store.inline_projections();
    let models: Vec<(&'static str, &str)> = rows
        .iter()
        .filter(|r| inline.iter().any(|p| p.name() == r.name()))
        .map(|r| (r.name(), r.upsert()))
        .collect();
    Arc::new(BatchSql::new(&models, deferred))
}

/// What a reaction writes its batches with, built once with the reaction: its store, the rows
/// of `A`'s inline read models and the statement ([`batch_sql`]).
pub struct BatchWriter<A: Fold> {
    store: EventStore,
    rows: Vec<InlineRow<A>>,
    sql: Arc<BatchSql>,
}

impl<A: Fold> BatchWriter<A> {
    pub fn new(store: EventStore, rows: Vec<InlineRow<A>>) -> Self {
        let sql = batch_sql(&store, &rows, &[]);
        BatchWriter { store, rows, sql }
    }

    /// Writes, beside its batches, the rows other projections of the batch left with the
    /// consumer's recording for `upserts` ([`Recording::defer`]), which saves the consumer the
    /// round trip that would write them.
    pub fn taking_deferred(self, upserts: &[RowUpsert]) -> Self {
        let sql = batch_sql(&self.store, &self.rows, upserts);
        BatchWriter { sql, ..self }
    }

    /// An empty batch for this writer's statement.
    pub fn batch(&self) -> BatchAppend {
        BatchAppend::new(self.sql.clone())
    }

    /// [`BatchAppend::settle`] with this writer's rows.
    pub fn settle(&self, batch: &mut BatchAppend, id: Uuid, state: &A::State) {
        batch.settle::<A>(id, state, &self.rows);
    }

    /// [`BatchAppend::write`] to this writer's store.
    pub async fn write(
        &self,
        batch: BatchAppend,
        conn: &mut PgConnection,
        recording: Option<&Recording<'_>>,
    ) -> Result<Vec<AppendResult>, StoreError> {
        batch.write(&self.store, conn, recording).await
    }
}

/// One stream's part of the batch.
struct Part {
    append: StreamAppend,
    /// The version the stream was loaded at, which its append expects.
    loaded: i64,
    /// The aggregate type's rank ([`BatchAppend::then`]).
    kind: usize,
}

/// A batch of appends to many aggregates, collected as a reaction decides, and written at
/// once ([`BatchAppend::write`]).
pub struct BatchAppend {
    sql: Arc<BatchSql>,
    parts: Vec<Part>,
    by_stream: HashMap<String, usize>,
    kinds: Vec<TypeId>,
    snapshots: Vec<BatchSnapshot>,
    /// One list per read model of `sql`.
    rows: Vec<Vec<serde_json::Value>>,
}

impl BatchAppend {
    pub fn new(sql: Arc<BatchSql>) -> Self {
        let rows = vec![Vec::new(); sql.models().len()];
        BatchAppend {
            sql,
            parts: Vec::new(),
            by_stream: HashMap::new(),
            kinds: Vec::new(),
            snapshots: Vec::new(),
            rows,
        }
    }

    /// Puts the streams of aggregate type `A` after those of the types put before it, and
    /// before those of any type not put. Writers that share streams must order them the same
    /// way; a type not put takes its rank when first pushed.
    pub fn then<A: Fold + 'static>(mut self) -> Self {
        self.kind::<A>();
        self
    }

    /// Whether nothing was queued.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Queues `events` for the aggregate `id` of type `A`, loaded at `loaded` (its first
    /// queued events expect that version; later ones follow them).
    pub fn push<A: Fold + 'static>(
        &mut self,
        id: Uuid,
        loaded: i64,
        events: &[A::Event],
        metadata: &Metadata,
    ) {
        if events.is_empty() {
            return;
        }
        let stream_id = A::stream_id(id);
        let index = match self.by_stream.get(&stream_id) {
            Some(&index) => index,
            None => {
                let kind = self.kind::<A>();
                self.parts.push(Part {
                    append: StreamAppend {
                        stream_id: stream_id.clone(),
                        expected: Loaded {
                            state: (),
                            version: loaded,
                        }
                        .expected(),
                        events: Vec::new(),
                    },
                    loaded,
                    kind,
                });
                self.by_stream.insert(stream_id, self.parts.len() - 1);
                self.parts.len() - 1
            }
        };
        self.parts[index]
            .append
            .events
            .extend(to_new_events::<A>(events, metadata));
    }

    fn kind<A: 'static>(&mut self) -> usize {
        let id = TypeId::of::<A>();
        match self.kinds.iter().position(|k| *k == id) {
            Some(kind) => kind,
            None => {
                self.kinds.push(id);
                self.kinds.len() - 1
            }
        }
    }

    /// Records the aggregate `id` as the batch leaves it, `state`, if the batch appends to
    /// it: its snapshot when `A` keeps them, and its row in each read model of `rows` that the
    /// statement writes. Call it once per aggregate, after its last [`BatchAppend::push`].
    pub fn settle<A: Fold>(&mut self, id: Uuid, state: &A::State, rows: &[InlineRow<A>]) {
        let stream_id = A::stream_id(id);
        let Some(&index) = self.by_stream.get(&stream_id) else {
            return;
        };
        let part = &self.parts[index];
        let version = part.loaded + part.append.events.len() as i64;
        if let Some(policy) = A::SNAPSHOT {
            match serde_json::to_value(state) {
                Ok(state) => self.snapshots.push(BatchSnapshot {
                    stream_id,
                    version,
                    schema_version: policy.schema_version,
                    state,
                }),
                // A state that does not serialise is not snapshotted; loads fold its events.
                Err(error) => tracing::warn!(%error, "snapshot not taken"),
            }
        }
        for row in rows {
            if let Some(model) = self.sql.models().iter().position(|m| *m == row.name()) {
                self.rows[model].push(row.row(id, state, version));
            }
        }
    }

    /// Writes the batch on the consumer's transaction: the streams in the order of their
    /// aggregate types ([`BatchAppend::then`]), each type's streams sorted by id (one
    /// global order, so batches sharing streams wait for each other instead of deadlocking),
    /// with the snapshots and rows settled, and the consumer's inbox rows when `recording`
    /// offers them. Nothing is written unless every stream is at the version it was loaded
    /// at ([`EventStore::append_batch`]).
    pub async fn write(
        self,
        store: &EventStore,
        conn: &mut PgConnection,
        recording: Option<&Recording<'_>>,
    ) -> Result<Vec<AppendResult>, StoreError> {
        let mut parts = self.parts;
        parts.sort_by(|a, b| (a.kind, &a.append.stream_id).cmp(&(b.kind, &b.append.stream_id)));
        let appends: Vec<StreamAppend> = parts.into_iter().map(|p| p.append).collect();
        store
            .append_batch(
                conn,
                &appends,
                &self.sql,
                &self.snapshots,
                &self.rows,
                recording,
            )
            .await
    }
}
