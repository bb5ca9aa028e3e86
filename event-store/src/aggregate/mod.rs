//! Commands on aggregates, once for every service: load the stream (from its snapshot when
//! the aggregate keeps them), fold, decide, append with the loaded version as the expectation,
//! and decide again on fresh state when a concurrent writer got there first.
//!
//! A domain stays pure: it implements [`Aggregate`] with two synchronous functions,
//! `decide(&State, Command) -> Result<Vec<Event>, Error>` and `evolve(State, &Event) -> State`;
//! its events' wire form comes from `wire_events!`. [`Commands`] does the IO around them, in
//! the spirit of cqrs-es's `CqrsFramework`, and every command handler of both services goes
//! through it.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::idempotency::Claimed;
use crate::preload::{Preloaded, Reads};
use crate::wire::{DecodeError, WireEvent};
use crate::{snapshot, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StoreError};

/// Decisions after a conflicting concurrent append, before answering with the conflict.
pub const CONFLICT_RETRIES: usize = 3;

/// How a stream is stored and read: its events' wire form and the state they fold into. Every
/// [`Aggregate`] is one; so is a stream that only reactions decide on (a saga's reservation).
pub trait Fold {
    /// The state as folded from the events; `Default` is one that does not exist yet.
    /// (De)serializable because it may be snapshotted.
    type State: Default + Clone + Send + Sync + Serialize + DeserializeOwned;
    type Event: WireEvent + Send + Sync;

    /// Whether and how the state is snapshotted; `None`: loaded by folding the whole stream.
    const SNAPSHOT: Option<SnapshotPolicy> = None;

    /// The stream holding the events of `id`.
    fn stream_id(id: Uuid) -> String;
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;
}

/// A pure domain: what it decides on its folded state.
pub trait Aggregate: Fold {
    type Command: Clone + Send;
    /// What `decide` refuses with: the client's mistake, never a storage failure.
    type Error: std::error::Error + Send + Sync + 'static;

    fn decide(state: &Self::State, command: Self::Command)
        -> Result<Vec<Self::Event>, Self::Error>;
}

/// Snapshots of an aggregate's state (`crate::snapshot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// The version of the state's shape: snapshots of another one are ignored.
    pub schema_version: i32,
    /// A command writes a snapshot once this many events were folded on top of the last one.
    pub every: usize,
}

/// An aggregate's state and the version of the last event folded into it (0: no stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<S> {
    pub state: S,
    pub version: i64,
}

impl<S: Default> Default for Loaded<S> {
    fn default() -> Self {
        Loaded {
            state: S::default(),
            version: 0,
        }
    }
}

impl<S> Loaded<S> {
    /// What the next append must expect so that any concurrent write makes it conflict.
    pub fn expected(&self) -> ExpectedVersion {
        match self.version {
            0 => ExpectedVersion::NoStream,
            n => ExpectedVersion::Exact(n),
        }
    }
}

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The domain refused the command.
    #[error(transparent)]
    Domain(E),
    /// Other writers kept appending to the stream; still conflicting after every retry.
    #[error("{0}")]
    Conflict(StoreError),
    #[error(transparent)]
    Store(StoreError),
    /// A stored event does not decode: a bug or a bad migration, never the client's fault.
    /// Retrying cannot help, so consumers treat it as poison.
    #[error("stored events cannot be read: {0:#}")]
    Corrupt(anyhow::Error),
    /// A stored event was written at a schema version newer than this code reads (a newer
    /// replica of this service, during a rolling upgrade): the command can succeed once this
    /// replica is upgraded, so it is a 503, not a 500.
    #[error("stored events are newer than this code reads: {0:#}")]
    NewerSchema(anyhow::Error),
}

impl<E: std::error::Error + 'static> From<StoreError> for CommandError<E> {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => CommandError::Conflict(e),
            other => CommandError::Store(other),
        }
    }
}

/// Why aggregates could not be loaded. One classification for every reader: a database
/// failure may pass, a stored event that does not decode never will.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored event does not decode: a bug or a bad migration, never the client's fault.
    #[error("stored events cannot be read: {0:#}")]
    Corrupt(anyhow::Error),
    /// A stored event is at a schema version newer than this code reads: written by a newer
    /// replica of this service during its rolling upgrade, readable once this one is upgraded.
    #[error("stored events are newer than this code reads: {0:#}")]
    NewerSchema(anyhow::Error),
}

impl LoadError {
    /// A fold that failed on a stored event ([`fold`]'s error), classified once: newer than
    /// this code reads, or never readable.
    pub fn unreadable(error: FoldError) -> LoadError {
        if error.source.is_too_new() {
            LoadError::NewerSchema(error.into())
        } else {
            LoadError::Corrupt(error.into())
        }
    }
}

impl<E: std::error::Error + 'static> From<LoadError> for CommandError<E> {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Database(e) => CommandError::Store(e.into()),
            LoadError::Corrupt(e) => CommandError::Corrupt(e),
            LoadError::NewerSchema(e) => CommandError::NewerSchema(e),
        }
    }
}

/// A stored event a fold could not decode, and where it is.
#[derive(Debug, thiserror::Error)]
#[error("decoding version {version} of {stream_id}")]
pub struct FoldError {
    pub stream_id: String,
    pub version: i64,
    #[source]
    pub source: DecodeError,
}

/// Folds stored events onto `start`. Types the aggregate does not know are skipped (they
/// still count for the version); a known type that does not decode is an error.
pub fn fold<A: Fold>(
    start: Loaded<A::State>,
    events: &[RecordedEvent],
) -> Result<Loaded<A::State>, FoldError> {
    let Loaded {
        mut state,
        mut version,
    } = start;
    for stored in events {
        // A type this code does not know is skipped; it still counts for the version.
        let decoded = A::Event::decode(stored).map_err(|source| FoldError {
            stream_id: stored.stream_id.clone(),
            version: stored.stream_version,
            source,
        })?;
        if let Some(event) = decoded {
            state = A::evolve(state, &event);
        }
        version = stored.stream_version;
    }
    Ok(Loaded { state, version })
}

/// An aggregate as loaded, and how many events were folded on top of its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedWith<S> {
    pub loaded: Loaded<S>,
    pub folded: usize,
}

/// Loads aggregates in one query whatever their number, on `conn` (so a reaction decides on
/// what its own transaction will append to): from their snapshots and the events after them
/// when `A` keeps snapshots, from all their events otherwise. Every id asked for is in the
/// answer; one without events is the default (not existing) state.
pub async fn load_many<A: Fold>(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, LoadedWith<A::State>>, LoadError> {
    load_many_from::<A>(conn, ids, None).await
}

/// As [`load_many`], taking first what the consumer's one read of the batch found already
/// (the streams a reaction declared with [`Reads::aggregates`]).
pub async fn load_many_from<A: Fold>(
    conn: &mut PgConnection,
    ids: &[Uuid],
    preloaded: Option<&Preloaded>,
) -> Result<HashMap<Uuid, LoadedWith<A::State>>, LoadError> {
    let streams: Vec<String> = ids.iter().map(|id| A::stream_id(*id)).collect();
    let wanted: Vec<&str> = streams.iter().map(String::as_str).collect();
    let mut found =
        snapshot::load_from::<A::State>(conn, &wanted, snapshot_schema::<A>(), preloaded).await?;
    let mut loaded = HashMap::with_capacity(ids.len());
    for (id, stream) in ids.iter().zip(&streams) {
        let aggregate = match found.remove(stream) {
            Some(found) => fold_snapshot::<A>(found)?,
            None => LoadedWith::default(),
        };
        loaded.insert(*id, aggregate);
    }
    Ok(loaded)
}

/// The snapshot schema version `A` loads at: without a policy no snapshot can match -1, so
/// every event is read.
pub fn snapshot_schema<A: Fold>() -> i32 {
    A::SNAPSHOT.map_or(-1, |p| p.schema_version)
}

impl Reads {
    /// Declares the streams of the aggregates `ids`, loaded as [`load_many_from`] loads them.
    pub fn aggregates<A: Fold>(&mut self, ids: impl IntoIterator<Item = Uuid>) {
        for id in ids {
            self.stream(A::stream_id(id), snapshot_schema::<A>());
        }
    }
}

/// The state a snapshot and the events after it give.
pub fn fold_snapshot<A: Fold>(
    found: snapshot::Loaded<A::State>,
) -> Result<LoadedWith<A::State>, LoadError> {
    let start = found.snapshot.map_or_else(Loaded::default, |s| Loaded {
        state: s.state,
        version: s.version,
    });
    Ok(LoadedWith {
        folded: found.events.len(),
        loaded: fold::<A>(start, &found.events).map_err(LoadError::unreadable)?,
    })
}

impl<S: Default> Default for LoadedWith<S> {
    fn default() -> Self {
        LoadedWith {
            loaded: Loaded::default(),
            folded: 0,
        }
    }
}

/// Stores the snapshots of these aggregates (id, state, version) in one statement, when `A`
/// keeps snapshots.
pub async fn save_snapshots<A: Fold>(
    conn: &mut PgConnection,
    aggregates: &[(Uuid, &A::State, i64)],
) -> Result<(), sqlx::Error> {
    let Some(policy) = A::SNAPSHOT else {
        return Ok(());
    };
    let streams: Vec<String> = aggregates
        .iter()
        .map(|(id, _, _)| A::stream_id(*id))
        .collect();
    let rows: Vec<(&str, i64, &A::State)> = streams
        .iter()
        .zip(aggregates)
        .map(|(stream, (_, state, version))| (stream.as_str(), *version, *state))
        .collect();
    snapshot::save(conn, policy.schema_version, &rows).await
}

/// Events ready to append: each with a fresh time-ordered id, its type's current schema
/// version and `metadata`.
pub fn to_new_events<A: Fold>(events: &[A::Event], metadata: &Metadata) -> Vec<NewEvent> {
    events
        .iter()
        .map(|event| {
            NewEvent::new(event.event_type(), event.payload())
                .with_schema_version(event.schema_version())
                .with_metadata(metadata.clone())
        })
        .collect()
}

/// Events ready to append under an idempotency key: as [`to_new_events`], but each id derived
/// from the claim and the event's index, so every attempt of the request names the same events.
pub fn to_keyed_events<A: Fold>(
    events: &[A::Event],
    metadata: &Metadata,
    claimed: &Claimed,
) -> Vec<NewEvent> {
    to_new_events::<A>(events, metadata)
        .into_iter()
        .enumerate()
        .map(|(i, event)| event.with_id(claimed.derive(&format!("event-{i}"))))
        .collect()
}

mod batch;
mod commands;

pub use batch::{batch_sql, BatchAppend, BatchWriter};
pub use commands::{Commands, On};
