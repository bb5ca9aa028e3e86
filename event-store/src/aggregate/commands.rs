//! [`Commands`]: the command executor itself, one path with or without an idempotency key.

use std::sync::{Arc, Mutex};

use hashlink::LruCache;
use uuid::Uuid;

use super::{
    load_many, save_snapshots, to_keyed_events, to_new_events, Aggregate, CommandError, Loaded,
    LoadedWith, CONFLICT_RETRIES,
};
use crate::idempotency::{self, Claimed, Kept};
use crate::read_model::InlineRow;
use crate::store::{Beside, CommandSql};
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
///
/// With the rows of every inline read model of the store ([`Commands::with_rows`]), a
/// command that appends is one statement ([`CommandSql`]): its events, the read models'
/// rows computed from the state it decided on, its snapshot when due and its kept response.
/// Otherwise it appends in a transaction of its own, in which the store folds its inline
/// projections.
pub struct Commands<A: Aggregate> {
    store: EventStore,
    rows: Arc<[InlineRow<A>]>,
    /// `None` while some inline projection has no row here.
    statement: Option<Arc<CommandSql>>,
    /// Aggregates as this executor's last successful appends left them
    /// ([`Commands::with_cache`]).
    cache: Option<Arc<Cache<A::State>>>,
}

/// Aggregates by id, the least recently used evicted first.
type Cache<S> = Mutex<LruCache<Uuid, LoadedWith<S>>>;

impl<A: Aggregate> Clone for Commands<A> {
    fn clone(&self) -> Self {
        Commands {
            store: self.store.clone(),
            rows: self.rows.clone(),
            statement: self.statement.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<A: Aggregate> Commands<A> {
    pub fn new(store: EventStore) -> Self {
        Commands {
            store,
            rows: Arc::new([]),
            statement: None,
            cache: None,
        }
        .with_rows(Vec::new())
    }

    /// Commands that keep up to `capacity` aggregates (the least recently used go first) as
    /// their own appends left them, and decide on that state instead of loading it: a command
    /// on a cached aggregate is one round trip. The append still expects the cached version,
    /// so when anyone else appended meanwhile (a reaction, another replica) the append
    /// conflicts, the entry goes, and the command is decided again on the state loaded from
    /// the store: a stale entry costs a reload, never a wrong decision. A command that the
    /// cached state refuses, or on which it appends nothing, is decided again on loaded state
    /// too, since only an append proves the entry current. Entries hold states of this
    /// code's own `A::State`, so a schema change is a new process with an empty cache.
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = (capacity > 0).then(|| Arc::new(Mutex::new(LruCache::new(capacity))));
        self
    }

    /// Runs `f` on the cache, if there is one.
    fn in_cache<R>(
        &self,
        f: impl FnOnce(&mut LruCache<Uuid, LoadedWith<A::State>>) -> R,
    ) -> Option<R> {
        let cache = self.cache.as_ref()?;
        let mut cache = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(f(&mut cache))
    }

    fn cached(&self, id: Uuid) -> Option<LoadedWith<A::State>> {
        self.in_cache(|cache| cache.get(&id).cloned()).flatten()
    }

    fn evict(&self, id: Uuid) {
        self.in_cache(|cache| cache.remove(&id));
    }

    /// Keeps `done` for `id` unless a newer version is kept already.
    fn remember(&self, id: Uuid, done: LoadedWith<A::State>) {
        self.in_cache(|cache| {
            let newer = cache
                .peek(&id)
                .is_some_and(|kept| kept.loaded.version >= done.loaded.version);
            if !newer {
                cache.insert(id, done);
            }
        });
    }

    /// Commands that write these inline read models' rows in their append's statement. Only
    /// when they cover every inline projection of the store (by name) does a command take
    /// the one-statement path; otherwise it appends in a transaction and the store applies
    /// its inline projections there.
    pub fn with_rows(mut self, rows: Vec<InlineRow<A>>) -> Self {
        let covered = self
            .store
            .inline_projections()
            .iter()
            .all(|p| rows.iter().any(|r| r.name() == p.name()));
        let upserts: Vec<&str> = rows.iter().map(InlineRow::upsert).collect();
        self.statement = covered.then(|| Arc::new(CommandSql::new(&upserts)));
        self.rows = rows.into();
        self
    }

    /// Whether a command that appends is one statement (see [`Commands::with_rows`]).
    pub fn one_statement(&self) -> bool {
        self.statement.is_some()
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
        let mut use_cache = true;
        loop {
            let (aggregate, from_cache) = match on {
                On::New(_) => (LoadedWith::default(), false),
                On::Existing(_) => match self.cached(id).filter(|_| use_cache) {
                    Some(cached) => (cached, true),
                    None => (self.load(id).await?, false),
                },
            };
            let decided = A::decide(&aggregate.loaded.state, command.clone());
            if from_cache && decided.as_ref().map_or(true, Vec::is_empty) {
                // Only an append proves a cached state current: a refusal or a no-op is
                // decided again on the stored state.
                self.evict(id);
                use_cache = false;
                continue;
            }
            let events = decided.map_err(CommandError::Domain)?;
            if events.is_empty() {
                let kept = respond(&aggregate.loaded);
                if let Some(claimed) = key {
                    let mut conn = self.conn().await?;
                    idempotency::keep(&mut conn, claimed, &kept)
                        .await
                        .map_err(StoreError::from)?;
                }
                return Ok(kept);
            }
            match self
                .append(id, aggregate, &events, metadata, key, respond)
                .await
            {
                Ok((done, kept)) => {
                    self.remember(id, done);
                    return Ok(kept);
                }
                Err(StoreError::Conflict { .. }) if from_cache => {
                    // The cached state was stale: decided again on the stored one, and not
                    // counted as a lost race.
                    self.evict(id);
                    use_cache = false;
                    tracing::debug!("the cached aggregate was stale; deciding again");
                }
                Err(StoreError::Conflict { .. })
                    if matches!(on, On::Existing(_)) && retries < CONFLICT_RETRIES =>
                {
                    retries += 1;
                    tracing::debug!(retries, "concurrent append to the stream; deciding again");
                }
                Err(e) => {
                    self.evict(id);
                    return self.kept_instead(key, e).await;
                }
            }
        }
    }

    /// Appends `events` onto `loaded` and renders the answer; under a key, keeps that answer
    /// for it with the append (in its statement, or in its transaction).
    async fn append(
        &self,
        id: Uuid,
        LoadedWith { loaded, folded }: LoadedWith<A::State>,
        events: &[A::Event],
        metadata: &Metadata,
        key: Option<&Claimed>,
        respond: &dyn Fn(&Loaded<A::State>) -> Kept,
    ) -> Result<(LoadedWith<A::State>, Kept), StoreError> {
        let stream_id = A::stream_id(id);
        let expected = loaded.expected();
        let new_events = match key {
            Some(claimed) => to_keyed_events::<A>(events, metadata, claimed),
            None => to_new_events::<A>(events, metadata),
        };
        let done = |loaded: Loaded<A::State>, version| Loaded {
            state: events.iter().fold(loaded.state, A::evolve),
            version,
        };
        if let Some(statement) = &self.statement {
            // The stream is at `loaded.version` or the statement writes nothing, so the
            // version it leaves is known before it runs, and with it the answer and rows.
            let version = loaded.version + events.len() as i64;
            let done = done(loaded, version);
            let kept = respond(&done);
            let rows: Vec<serde_json::Value> = self
                .rows
                .iter()
                .map(|r| r.row(id, &done.state, version))
                .collect();
            let folded = folded + events.len();
            let snapshot = match A::SNAPSHOT {
                Some(p) if folded >= p.every => Some((
                    p.schema_version,
                    serde_json::to_value(&done.state).map_err(StoreError::encode)?,
                )),
                _ => None,
            };
            let folded = if snapshot.is_some() { 0 } else { folded };
            let beside = Beside {
                kept: key.map(|claimed| (claimed, &kept)),
                snapshot,
                rows: &rows,
            };
            self.store
                .append_command(&stream_id, expected, &new_events, statement, &beside)
                .await?;
            return Ok((
                LoadedWith {
                    loaded: done,
                    folded,
                },
                kept,
            ));
        }
        let Some(claimed) = key else {
            let appended = self.store.append(&stream_id, expected, &new_events).await?;
            let done = done(loaded, appended.stream_version);
            let kept = respond(&done);
            let folded = self
                .snapshot_when_due(id, folded + events.len(), &done)
                .await;
            return Ok((
                LoadedWith {
                    loaded: done,
                    folded,
                },
                kept,
            ));
        };
        let append = StreamAppend {
            stream_id,
            expected,
            events: new_events,
        };
        let mut tx = self.store.pool().begin().await?;
        let appended = self.store.append_in_tx(&mut tx, &[append]).await?;
        let done = done(loaded, appended[0].stream_version);
        let kept = respond(&done);
        idempotency::keep(&mut tx, claimed, &kept).await?;
        tx.commit().await?;
        self.store.notify_appended();
        let folded = self
            .snapshot_when_due(id, folded + events.len(), &done)
            .await;
        Ok((
            LoadedWith {
                loaded: done,
                folded,
            },
            kept,
        ))
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

    /// Stores the aggregate's state as of its new version once `folded` events lie on top of
    /// its last snapshot (the transaction path; the statement path writes it in the
    /// statement). Only a cache: a failure is logged, and the next load folds a few more.
    /// Returns how many events now lie on top of the last snapshot.
    async fn snapshot_when_due(&self, id: Uuid, folded: usize, done: &Loaded<A::State>) -> usize {
        if A::SNAPSHOT.is_none_or(|p| folded < p.every) {
            return folded;
        }
        let saved = async {
            let mut conn = self.store.pool().acquire().await?;
            save_snapshots::<A>(&mut conn, &[(id, &done.state, done.version)]).await
        };
        match saved.await {
            Ok(()) => 0,
            Err(e) => {
                tracing::warn!(error = %e, "cannot save a snapshot");
                folded
            }
        }
    }
}
