//! [`Commands`]: the command executor itself, one path with or without an idempotency key.

use std::marker::PhantomData;

use uuid::Uuid;

use super::{
    load_many, save_snapshots, to_keyed_events, to_new_events, Aggregate, CommandError, Loaded,
    LoadedWith, CONFLICT_RETRIES,
};
use crate::idempotency::{self, Claimed, Kept};
use crate::{EventStore, Metadata, StoreError, StreamAppend};

/// Which aggregate a command runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// One that may exist: loaded (from its snapshot, when the aggregate keeps them) before
    /// the command is decided, and decided again on fresh state after a concurrent append.
    Existing(Uuid),
    /// One whose id the caller has just drawn (a fresh time-ordered uuid, or one derived from
    /// the request's idempotency key), so its stream cannot exist yet: it is an aggregate at
    /// version 0, decided on the default state without a read and appended expecting no
    /// stream. (An earlier attempt under the same key that got there first is answered by
    /// its kept response.)
    New(Uuid),
}

impl On {
    pub fn id(self) -> Uuid {
        match self {
            On::Existing(id) | On::New(id) => id,
        }
    }
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

    /// Runs `command` on the aggregate `on`: loads it (unless [`On::New`]), decides, appends
    /// what the decision yields with the loaded version as the expectation, and answers with
    /// what `respond` renders from the aggregate as the command left it. After a conflicting
    /// concurrent append it decides again on fresh state (up to [`CONFLICT_RETRIES`] times).
    /// A command that yields nothing appends nothing and answers with the aggregate as it is.
    ///
    /// Under an idempotency key (`key`, the request's claim), the events' ids derive from the
    /// claim, so every attempt of the request names the same events, and the answer is kept
    /// for the key in the append's transaction (in a statement of its own when the command
    /// appends nothing). When an earlier attempt already appended these very events, its
    /// kept answer is the answer.
    #[tracing::instrument(skip_all, fields(stream = %A::stream_id(on.id())), err(level = "debug"))]
    pub async fn execute(
        &self,
        on: On,
        command: A::Command,
        metadata: &Metadata,
        key: Option<&Claimed>,
        respond: &dyn Fn(&Loaded<A::State>) -> Kept,
    ) -> Result<Kept, CommandError<A::Error>> {
        let id = on.id();
        let mut retries = 0;
        loop {
            let LoadedWith { loaded, folded } = match on {
                On::New(_) => LoadedWith::default(),
                On::Existing(_) => self.load(id).await?,
            };
            let events = A::decide(&loaded.state, command.clone()).map_err(CommandError::Domain)?;
            if events.is_empty() {
                let kept = respond(&loaded);
                if let Some(claimed) = key {
                    let mut conn = self.conn().await?;
                    idempotency::keep(&mut conn, claimed, &kept)
                        .await
                        .map_err(StoreError::from)?;
                }
                return Ok(kept);
            }
            match self
                .append(id, loaded, &events, metadata, key, respond)
                .await
            {
                Ok((done, kept)) => {
                    if A::SNAPSHOT.is_some_and(|p| folded + events.len() >= p.every) {
                        self.snapshot(id, &done).await;
                    }
                    return Ok(kept);
                }
                Err(StoreError::Conflict { .. })
                    if matches!(on, On::Existing(_)) && retries < CONFLICT_RETRIES =>
                {
                    retries += 1;
                    tracing::debug!(retries, "concurrent append to the stream; deciding again");
                }
                Err(e) => return self.kept_instead(key, e).await,
            }
        }
    }

    /// Appends `events` onto `loaded` and renders the answer; under a key, keeps that answer
    /// for it in the append's transaction.
    async fn append(
        &self,
        id: Uuid,
        loaded: Loaded<A::State>,
        events: &[A::Event],
        metadata: &Metadata,
        key: Option<&Claimed>,
        respond: &dyn Fn(&Loaded<A::State>) -> Kept,
    ) -> Result<(Loaded<A::State>, Kept), StoreError> {
        let stream_id = A::stream_id(id);
        let done = |loaded: Loaded<A::State>, version| Loaded {
            state: events.iter().fold(loaded.state, A::evolve),
            version,
        };
        let Some(claimed) = key else {
            let new_events = to_new_events::<A>(events, metadata);
            let appended = self
                .store
                .append(&stream_id, loaded.expected(), &new_events)
                .await?;
            let done = done(loaded, appended.stream_version);
            let kept = respond(&done);
            return Ok((done, kept));
        };
        let append = StreamAppend {
            stream_id,
            expected: loaded.expected(),
            events: to_keyed_events::<A>(events, metadata, claimed),
        };
        let mut tx = self.store.pool().begin().await?;
        let appended = self.store.append_in_tx(&mut tx, &[append]).await?;
        let done = done(loaded, appended[0].stream_version);
        let kept = respond(&done);
        idempotency::keep(&mut tx, claimed, &kept).await?;
        tx.commit().await?;
        self.store.notify_appended();
        Ok((done, kept))
    }

    /// After an append failed: under a key, when its events are stored already, another
    /// attempt of the same request got there first and kept its answer, which is the answer.
    async fn kept_instead(
        &self,
        key: Option<&Claimed>,
        error: StoreError,
    ) -> Result<Kept, CommandError<A::Error>> {
        if let (Some(claimed), StoreError::EventIdReused { .. }) = (key, &error) {
            if let Some(kept) = idempotency::kept(self.store.pool(), claimed)
                .await
                .map_err(StoreError::from)?
            {
                tracing::debug!("another attempt under the key appended first; replaying");
                return Ok(kept);
            }
        }
        Err(error.into())
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, StoreError> {
        Ok(self.store.pool().acquire().await?)
    }

    /// The aggregate `id` as its events (and snapshot) give it.
    pub async fn load(&self, id: Uuid) -> Result<LoadedWith<A::State>, CommandError<A::Error>> {
        let mut conn = self.conn().await?;
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
