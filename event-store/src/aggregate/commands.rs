//! [`Commands`]: the command executor itself, with and without an idempotency key.

use std::marker::PhantomData;

use uuid::Uuid;

use super::{
    load_many, save_snapshots, to_keyed_events, to_new_events, Aggregate, CommandError, Loaded,
    LoadedWith, CONFLICT_RETRIES,
};
use crate::idempotency::{self, Claimed, Kept};
use crate::{EventStore, ExpectedVersion, Metadata, StoreError, StreamAppend};

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
