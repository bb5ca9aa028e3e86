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
use std::marker::PhantomData;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::consumer::HandleError;
use crate::idempotency::{self, Claimed, Kept};
use crate::wire::WireEvent;
use crate::{
    snapshot, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StoreError,
    StreamAppend,
};

/// Decisions after a conflicting concurrent append, before answering with the conflict.
pub const CONFLICT_RETRIES: usize = 3;

/// How a stream is stored and read: its events' wire form and the state they fold into. Every
/// [`Aggregate`] is one; so is a stream that only reactions decide on (a saga's reservation).
pub trait Fold {
    /// The state as folded from the events; `Default` is one that does not exist yet.
    /// (De)serializable because it may be snapshotted.
    type State: Default + Clone + Send + Sync + Serialize + DeserializeOwned;
    type Event: WireEvent + Send + Sync;

    /// The schema version new events are written at.
    const SCHEMA_VERSION: i32;
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
}

impl<E: std::error::Error + 'static> From<LoadError> for CommandError<E> {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Database(e) => CommandError::Store(e.into()),
            LoadError::Corrupt(e) => CommandError::Corrupt(e),
        }
    }
}

impl From<LoadError> for HandleError {
    /// Inside a consumer: a corrupt stream fails the same way on every delivery (poison); a
    /// database error is classified as every other one is.
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Database(e) => HandleError::database(e, "loading aggregates"),
            LoadError::Corrupt(e) => HandleError::Poison(format!("{e:#}")),
        }
    }
}

/// Folds stored events onto `start`. Types the aggregate does not know are skipped (they
/// still count for the version); a known type that does not decode is an error.
pub fn fold<A: Fold>(
    start: Loaded<A::State>,
    events: &[RecordedEvent],
) -> anyhow::Result<Loaded<A::State>> {
    let Loaded {
        mut state,
        mut version,
    } = start;
    for stored in events {
        // A type this code does not know is skipped; it still counts for the version.
        let decoded =
            A::Event::from_stored(&stored.event_type, &stored.payload).with_context(|| {
                format!(
                    "decoding {} at version {} of {}",
                    stored.event_type, stored.stream_version, stored.stream_id
                )
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
    let streams: Vec<String> = ids.iter().map(|id| A::stream_id(*id)).collect();
    let wanted: Vec<&str> = streams.iter().map(String::as_str).collect();
    // Without a policy no snapshot can match schema version -1, so every event is read.
    let schema_version = A::SNAPSHOT.map_or(-1, |p| p.schema_version);
    let mut found = snapshot::load::<A::State>(conn, &wanted, schema_version).await?;
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
        loaded: fold::<A>(start, &found.events).map_err(LoadError::Corrupt)?,
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

/// Events ready to append: each with a fresh time-ordered id, the aggregate's schema version
/// and `metadata`.
pub fn to_new_events<A: Fold>(events: &[A::Event], metadata: &Metadata) -> Vec<NewEvent> {
    events
        .iter()
        .map(|event| {
            NewEvent::new(event.event_type(), event.payload())
                .with_schema_version(A::SCHEMA_VERSION)
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

/// A command under an `Idempotency-Key`: its events' ids derive from the claim, and
/// `respond` renders the response kept for the key, stored in the append's transaction.
pub struct Keyed<'a, S> {
    pub claimed: &'a Claimed,
    pub respond: &'a dyn Fn(&Loaded<S>) -> Kept,
}

/// Runs commands on aggregates of type `A` against a store.
pub struct Commands<A> {
    store: EventStore,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Commands<A> {
    fn clone(&self) -> Self {
        Commands {
            store: self.store.clone(),
            aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> Commands<A> {
    pub fn new(store: EventStore) -> Self {
        Commands {
            store,
            aggregate: PhantomData,
        }
    }

    /// Decides `command` on the aggregate `id` and appends what it yields, deciding again on
    /// fresh state after a conflicting concurrent append (up to [`CONFLICT_RETRIES`] times).
    /// A command that yields nothing appends nothing and answers with the aggregate as it is.
    #[tracing::instrument(skip_all, fields(stream = %A::stream_id(id)), err(level = "debug"))]
    pub async fn execute(
        &self,
        id: Uuid,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<Loaded<A::State>, CommandError<A::Error>> {
        let stream = A::stream_id(id);
        let mut retries = 0;
        loop {
            let LoadedWith { loaded, folded } = self.load(id).await?;
            let events = A::decide(&loaded.state, command.clone()).map_err(CommandError::Domain)?;
            if events.is_empty() {
                return Ok(loaded);
            }
            let new_events = to_new_events::<A>(&events, metadata);
            match self
                .store
                .append(&stream, loaded.expected(), &new_events)
                .await
            {
                Ok(appended) => {
                    let done = Loaded {
                        state: events.iter().fold(loaded.state, A::evolve),
                        version: appended.stream_version,
                    };
                    if A::SNAPSHOT.is_some_and(|p| folded + events.len() >= p.every) {
                        self.snapshot(id, &done).await;
                    }
                    return Ok(done);
                }
                Err(StoreError::Conflict { .. }) if retries < CONFLICT_RETRIES => {
                    retries += 1;
                    tracing::debug!(retries, "concurrent append to the stream; deciding again");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Decides `command` on an aggregate whose id the caller has just drawn (a fresh
    /// time-ordered uuid), so its stream cannot exist: nothing is read, and the append
    /// expects no stream.
    #[tracing::instrument(skip_all, fields(stream = %A::stream_id(id)), err(level = "debug"))]
    pub async fn execute_new(
        &self,
        id: Uuid,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<Loaded<A::State>, CommandError<A::Error>> {
        let events = A::decide(&A::State::default(), command).map_err(CommandError::Domain)?;
        let appended = self
            .store
            .append(
                &A::stream_id(id),
                ExpectedVersion::NoStream,
                &to_new_events::<A>(&events, metadata),
            )
            .await?;
        Ok(Loaded {
            state: events.iter().fold(A::State::default(), A::evolve),
            version: appended.stream_version,
        })
    }

    /// [`Commands::execute`] under an idempotency key: the events' ids derive from the key,
    /// and the response `keyed.respond` renders is kept for the key in the append's
    /// transaction (in a statement of its own when the command appends nothing). Answers
    /// with that response; with the response kept by an earlier attempt when that attempt
    /// already appended these very events.
    #[tracing::instrument(skip_all, fields(stream = %A::stream_id(id)), err(level = "debug"))]
    pub async fn execute_keyed(
        &self,
        id: Uuid,
        command: A::Command,
        metadata: &Metadata,
        keyed: &Keyed<'_, A::State>,
    ) -> Result<Kept, CommandError<A::Error>> {
        let mut retries = 0;
        loop {
            let LoadedWith { loaded, folded } = self.load(id).await?;
            let events = A::decide(&loaded.state, command.clone()).map_err(CommandError::Domain)?;
            if events.is_empty() {
                let kept = (keyed.respond)(&loaded);
                let mut conn = self
                    .store
                    .pool()
                    .acquire()
                    .await
                    .map_err(StoreError::from)?;
                idempotency::keep(&mut conn, keyed.claimed, &kept)
                    .await
                    .map_err(StoreError::from)?;
                return Ok(kept);
            }
            match self
                .append_keyed(id, loaded, &events, metadata, keyed)
                .await
            {
                Ok((done, kept)) => {
                    if A::SNAPSHOT.is_some_and(|p| folded + events.len() >= p.every) {
                        self.snapshot(id, &done).await;
                    }
                    return Ok(kept);
                }
                Err(StoreError::Conflict { .. }) if retries < CONFLICT_RETRIES => {
                    retries += 1;
                    tracing::debug!(retries, "concurrent append to the stream; deciding again");
                }
                Err(e) => return self.kept_instead(keyed, e).await,
            }
        }
    }

    /// [`Commands::execute_new`] under an idempotency key (see [`Commands::execute_keyed`]).
    #[tracing::instrument(skip_all, fields(stream = %A::stream_id(id)), err(level = "debug"))]
    pub async fn execute_new_keyed(
        &self,
        id: Uuid,
        command: A::Command,
        metadata: &Metadata,
        keyed: &Keyed<'_, A::State>,
    ) -> Result<Kept, CommandError<A::Error>> {
        let events = A::decide(&A::State::default(), command).map_err(CommandError::Domain)?;
        match self
            .append_keyed(id, Loaded::default(), &events, metadata, keyed)
            .await
        {
            Ok((_, kept)) => Ok(kept),
            Err(e) => self.kept_instead(keyed, e).await,
        }
    }

    /// Appends `events` onto `loaded` and keeps the response for the key, in one transaction.
    async fn append_keyed(
        &self,
        id: Uuid,
        loaded: Loaded<A::State>,
        events: &[A::Event],
        metadata: &Metadata,
        keyed: &Keyed<'_, A::State>,
    ) -> Result<(Loaded<A::State>, Kept), StoreError> {
        let append = StreamAppend {
            stream_id: A::stream_id(id),
            expected: loaded.expected(),
            events: to_keyed_events::<A>(events, metadata, keyed.claimed),
        };
        let mut tx = self.store.pool().begin().await?;
        let appended = self.store.append_in_tx(&mut tx, &[append]).await?;
        let done = Loaded {
            state: events.iter().fold(loaded.state, A::evolve),
            version: appended[0].stream_version,
        };
        let kept = (keyed.respond)(&done);
        idempotency::keep(&mut tx, keyed.claimed, &kept).await?;
        tx.commit().await?;
        self.store.notify_appended();
        Ok((done, kept))
    }

    /// After a keyed append failed: when its events are stored already, another attempt of
    /// the same request got there first and kept its response, which is the answer.
    async fn kept_instead(
        &self,
        keyed: &Keyed<'_, A::State>,
        error: StoreError,
    ) -> Result<Kept, CommandError<A::Error>> {
        if let StoreError::EventIdReused { .. } = error {
            if let Some(kept) = idempotency::kept(self.store.pool(), keyed.claimed)
                .await
                .map_err(StoreError::from)?
            {
                tracing::debug!("another attempt under the key appended first; replaying");
                return Ok(kept);
            }
        }
        Err(error.into())
    }

    /// The aggregate `id` as its events (and snapshot) give it.
    pub async fn load(&self, id: Uuid) -> Result<LoadedWith<A::State>, CommandError<A::Error>> {
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(StoreError::from)?;
        let mut loaded = load_many::<A>(&mut conn, &[id]).await?;
        Ok(loaded.remove(&id).unwrap_or_default())
    }

    /// Stores the aggregate's state as of its new version. Only a cache: a failure is
    /// logged, and the next load folds a few more events.
    async fn snapshot(&self, id: Uuid, done: &Loaded<A::State>) {
        let saved = async {
            let mut conn = self.store.pool().acquire().await?;
            save_snapshots::<A>(&mut conn, &[(id, &done.state, done.version)]).await
        };
        if let Err(e) = saved.await {
            tracing::warn!(error = %e, "cannot save a snapshot");
        }
    }
}
