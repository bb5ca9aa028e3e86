//! A command as one statement (`store::CommandSql`, `aggregate::Commands::with_rows`): the
//! events, the inline read model's row computed from the decided state, the snapshot and the
//! kept response land together, and nothing of it lands when the append does not, whether
//! its checks fail (a stale expected version) or it is decided again after a lost race.
//! And a reaction's batch as one statement (`store::BatchSql`, `aggregate::BatchAppend`):
//! events to many streams, their rows and snapshots, together or not at all.
// Its helpers unwrap too, and clippy.toml's allow-unwrap-in-tests covers test functions only.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use event_store::aggregate::{
    batch_sql, Aggregate, BatchAppend, Commands, Fold, Loaded, On, SnapshotPolicy,
};
use event_store::idempotency::{self, Claim, Claimed, Kept};
use event_store::read_model::{InlineRow, RowModel, StateRow};
use event_store::store::{Beside, CommandSql};
use event_store::testing::TestDb;
use event_store::{
    wire_events, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StoreError,
};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

wire_events! {
    TallyEvent { Added }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Added {
    pub id: Uuid,
    pub by: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Total(i64);

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

/// Set by the test: the next `decide` first lets another writer append to the stream, as a
/// concurrent request would between this command's load and its append.
static INTERLOPE: AtomicBool = AtomicBool::new(false);
static INTERLOPER: std::sync::Mutex<Option<(String, Uuid)>> = std::sync::Mutex::new(None);

struct Tally;

impl Fold for Tally {
    type State = Total;
    type Event = TallyEvent;

    // Commands never reach it; a reaction's batch snapshots what it appends to.
    const SNAPSHOT: Option<SnapshotPolicy> = Some(SnapshotPolicy {
        schema_version: 1,
        every: 1000,
    });

    fn stream_id(id: Uuid) -> String {
        format!("tally-{id}")
    }

    fn evolve(state: Total, event: &TallyEvent) -> Total {
        match event {
            TallyEvent::Added(e) => Total(state.0 + e.by),
        }
    }
}

/// Adds `(id, by)`.
impl Aggregate for Tally {
    type Command = (Uuid, i64);
    type Error = Refused;

    fn decide(_state: &Total, (id, by): (Uuid, i64)) -> Result<Vec<TallyEvent>, Refused> {
        if INTERLOPE.swap(false, Ordering::SeqCst) {
            // Another writer, on its own connection and runtime, appends 100 now, through a
            // store that folds the read model inline.
            let (url, id) = INTERLOPER.lock().unwrap().clone().unwrap();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                runtime.block_on(async {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    let event = NewEvent::new("Added", serde_json::json!({ "id": id, "by": 100 }));
                    EventStore::new(pool)
                        .with_inline(vec![Arc::new(Tallies)])
                        .append(&Tally::stream_id(id), ExpectedVersion::Any, &[event])
                        .await
                        .unwrap();
                });
            })
            .join()
            .unwrap();
        }
        if by == 0 {
            return Err(Refused);
        }
        Ok(vec![Added { id, by }.into()])
    }
}

/// The read model `tallies`: one row per tally.
struct Tallies;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct TallyRow {
    id: Uuid,
    total: i64,
    version: i64,
    updated_at: DateTime<Utc>,
}

impl RowModel for Tallies {
    const NAME: &'static str = "tallies";
    const TABLES: &'static [&'static str] = &["tallies"];
    type Event = TallyEvent;
    type Recorded = RecordedEvent;
    type Row = TallyRow;

    fn key(event: &TallyEvent) -> Option<Uuid> {
        match event {
            TallyEvent::Added(e) => Some(e.id),
        }
    }

    fn row_key(row: &TallyRow) -> Uuid {
        row.id
    }

    fn starts_stream(_event: &TallyEvent, recorded: &RecordedEvent) -> bool {
        recorded.stream_version == 1
    }

    fn next_row(
        current: Option<&TallyRow>,
        event: &TallyEvent,
        recorded: &RecordedEvent,
    ) -> anyhow::Result<Option<TallyRow>> {
        if current.is_some_and(|row| row.version >= recorded.stream_version) {
            return Ok(None);
        }
        let TallyEvent::Added(e) = event;
        Ok(Some(TallyRow {
            id: e.id,
            total: current.map_or(0, |row| row.total) + e.by,
            version: recorded.stream_version,
            updated_at: recorded.recorded_at,
        }))
    }

    fn load<'a>(
        conn: &'a mut PgConnection,
        keys: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<TallyRow>, sqlx::Error>> {
        Box::pin(async move {
            sqlx::query_as("SELECT id, total, version, updated_at FROM tallies WHERE id = ANY($1)")
                .bind(keys)
                .fetch_all(conn)
                .await
        })
    }

    fn upsert(
        conn: &mut PgConnection,
        rows: Vec<TallyRow>,
    ) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO tallies (id, total, version, updated_at) \
                 SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::timestamptz[]) \
                 ON CONFLICT (id) DO UPDATE SET total = excluded.total, \
                     version = excluded.version, updated_at = excluded.updated_at \
                 WHERE tallies.version < excluded.version",
            )
            .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.total).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .execute(conn)
            .await?;
            Ok(())
        })
    }
}

impl StateRow<Tally> for Tallies {
    fn state_row(id: Uuid, state: &Total, version: i64) -> serde_json::Value {
        serde_json::json!({ "id": id, "total": state.0, "version": version })
    }

    const UPSERT: &'static str = "\
INSERT INTO tallies (id, total, version, updated_at)
SELECT r.id, r.total, r.version, now()
FROM {input}, jsonb_populate_record(NULL::tallies, {input}.data) AS r
ON CONFLICT (id) DO UPDATE SET total = excluded.total, version = excluded.version,
    updated_at = excluded.updated_at
WHERE tallies.version < excluded.version";
}

/// Adds `by` to the tally `on` names, with no key; the answer.
async fn add(commands: &Commands<Tally>, on: On, by: i64) -> Kept {
    commands
        .execute(on, (on.id(), by), &Metadata::default(), None, &answer)
        .await
        .unwrap()
}

fn answer(done: &Loaded<Total>) -> Kept {
    Kept::json(200, None, &(&done.state, done.version))
}

fn state_of(kept: &Kept) -> (Total, i64) {
    serde_json::from_slice(&kept.body).unwrap()
}

async fn row(store: &EventStore, id: Uuid) -> Option<TallyRow> {
    sqlx::query_as("SELECT id, total, version, updated_at FROM tallies WHERE id = $1")
        .bind(id)
        .fetch_optional(store.pool())
        .await
        .unwrap()
}

async fn claim(store: &EventStore, key: &str) -> Claimed {
    let claim = idempotency::claim(
        store.pool(),
        key,
        "POST /tallies",
        Duration::from_secs(30),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    match claim {
        Claim::Claimed(claimed) => claimed,
        other => panic!("{other:?}"),
    }
}

async fn recorded_at(store: &EventStore, id: Uuid, version: i64) -> DateTime<Utc> {
    sqlx::query_scalar(
        "SELECT recorded_at FROM events WHERE stream_id = $1 AND stream_version = $2",
    )
    .bind(Tally::stream_id(id))
    .bind(version)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// A database with the `tallies` table, and a store folding it inline.
async fn tallies_db() -> (TestDb, EventStore) {
    let db = TestDb::new().await;
    sqlx::query(
        "CREATE TABLE tallies (id uuid PRIMARY KEY, total bigint NOT NULL, \
         version bigint NOT NULL, updated_at timestamptz NOT NULL)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let store = db.store().with_inline(vec![Arc::new(Tallies)]);
    (db, store)
}

// One test, so the statics above are not shared by tests running at once.
#[tokio::test]
async fn a_command_writes_its_events_row_and_kept_response_together_or_not_at_all() {
    let (db, store) = tallies_db().await;
    let commands =
        Commands::<Tally>::new(store.clone()).with_rows(vec![InlineRow::of::<Tallies>()]);
    assert!(commands.one_statement());
    let metadata = Metadata::default();
    let id = Uuid::now_v7();

    // The row lands with the events, stamped with their recorded_at, as the fold would.
    add(&commands, On::New(id), 5).await;
    let kept = add(&commands, On::Existing(id), 3).await;
    assert_eq!(state_of(&kept), (Total(8), 2));
    let stored = row(&store, id).await.unwrap();
    assert_eq!((stored.total, stored.version), (8, 2));
    assert_eq!(stored.updated_at, recorded_at(&store, id, 2).await);

    // A keyed command that loses a race: its first statement writes nothing (no row, no
    // kept response), and the key keeps the answer of the attempt that landed.
    let claimed = claim(&store, "lost-race").await;
    *INTERLOPER.lock().unwrap() = Some((db.url.clone(), id));
    INTERLOPE.store(true, Ordering::SeqCst);
    let kept = commands
        .execute(
            On::Existing(id),
            (id, 1),
            &metadata,
            Some(&claimed),
            &answer,
        )
        .await
        .unwrap();
    assert_eq!(state_of(&kept), (Total(109), 4), "decided again on 108");
    let stored = idempotency::kept(store.pool(), &claimed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state_of(&stored),
        (Total(109), 4),
        "the kept answer is the final one"
    );
    let stored = row(&store, id).await.unwrap();
    assert_eq!((stored.total, stored.version), (109, 4));

    // The same request again: its events are stored, so the kept answer is replayed.
    let again = commands
        .execute(
            On::Existing(id),
            (id, 1),
            &metadata,
            Some(&claimed),
            &answer,
        )
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(state_of(&again), (Total(109), 4));
    assert_eq!(
        store.stream_version(&Tally::stream_id(id)).await.unwrap(),
        4
    );

    // A statement at a stale version writes nothing at all: no event, no row (a version 9
    // would show), no kept response, no snapshot.
    let claimed = claim(&store, "stale").await;
    let sql = CommandSql::new(&[Tallies::UPSERT]);
    let event = NewEvent::new("Added", serde_json::json!({ "id": id, "by": 1000 }));
    let kept = Kept::json(201, None, &"stale");
    let rows = [Tallies::state_row(id, &Total(1), 9)];
    let stale = store
        .append_command(
            &Tally::stream_id(id),
            ExpectedVersion::Exact(2),
            &[event],
            &sql,
            &Beside {
                kept: Some((&claimed, &kept)),
                snapshot: Some((1, serde_json::json!(1))),
                rows: &rows,
            },
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { actual: 4, .. })),
        "{stale:?}"
    );
    assert_eq!(
        store.stream_version(&Tally::stream_id(id)).await.unwrap(),
        4
    );
    let stored = row(&store, id).await.unwrap();
    assert_eq!((stored.total, stored.version), (109, 4));
    assert_eq!(
        idempotency::kept(store.pool(), &claimed).await.unwrap(),
        None
    );
    let snapshots: i64 = sqlx::query_scalar("SELECT count(*) FROM snapshots WHERE stream_id = $1")
        .bind(Tally::stream_id(id))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(snapshots, 0, "no snapshot of a stale attempt");

    // A cache of aggregates: a command decides on the state its executor's last append
    // left, and when another writer appended meanwhile, its append (expecting the cached
    // version) conflicts and it is decided again on the stored state.
    let cached = Commands::<Tally>::new(store.clone())
        .with_rows(vec![InlineRow::of::<Tallies>()])
        .with_cache(16);
    let warm = Uuid::now_v7();
    add(&cached, On::New(warm), 1).await;
    let kept = add(&cached, On::Existing(warm), 1).await;
    assert_eq!(state_of(&kept), (Total(2), 2));
    let behind = NewEvent::new("Added", serde_json::json!({ "id": warm, "by": 100 }));
    store
        .append(
            &Tally::stream_id(warm),
            ExpectedVersion::Exact(2),
            &[behind],
        )
        .await
        .unwrap();
    let kept = add(&cached, On::Existing(warm), 1).await;
    assert_eq!(
        state_of(&kept),
        (Total(103), 4),
        "decided on the stored state"
    );
    let stored = row(&store, warm).await.unwrap();
    assert_eq!((stored.total, stored.version), (103, 4));
    let kept = add(&cached, On::Existing(warm), 1).await;
    assert_eq!(state_of(&kept), (Total(104), 5));

    // Without rows for every inline projection, a command appends in a transaction and the
    // store folds the projection there: the same row.
    let fallback = Commands::<Tally>::new(store.clone());
    assert!(!fallback.one_statement());
    let other = Uuid::now_v7();
    add(&fallback, On::New(other), 7).await;
    add(&fallback, On::Existing(other), 2).await;
    let stored = row(&store, other).await.unwrap();
    assert_eq!((stored.total, stored.version), (9, 2));
    assert_eq!(stored.updated_at, recorded_at(&store, other, 2).await);
}

/// Another aggregate type, whose streams a batch puts first (though they sort after the
/// tallies' by id).
struct Mark;

impl Fold for Mark {
    type State = Total;
    type Event = TallyEvent;

    fn stream_id(id: Uuid) -> String {
        format!("witness-{id}")
    }

    fn evolve(state: Total, event: &TallyEvent) -> Total {
        Tally::evolve(state, event)
    }
}

fn added(id: Uuid, by: i64) -> TallyEvent {
    Added { id, by }.into()
}

async fn snapshot_of(store: &EventStore, id: Uuid) -> Option<(i64, serde_json::Value)> {
    sqlx::query_as("SELECT stream_version, state FROM snapshots WHERE stream_id = $1")
        .bind(Tally::stream_id(id))
        .fetch_optional(store.pool())
        .await
        .unwrap()
}

async fn position(store: &EventStore, stream: &str) -> i64 {
    sqlx::query_scalar("SELECT max(position) FROM events WHERE stream_id = $1")
        .bind(stream)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_reaction_batch_writes_its_events_rows_and_snapshots_together_or_not_at_all() {
    let (_db, store) = tallies_db().await;
    let rows = [InlineRow::of::<Tallies>()];
    let sql = batch_sql(&store, &rows, &[]);
    let metadata = Metadata::default();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let commands = Commands::<Tally>::new(store.clone()).with_rows(rows.to_vec());
    add(&commands, On::New(a), 1).await;

    // a at 1 gains 2; b is new and gains 5 then 1: one statement, rows and snapshots beside.
    let mut batch = BatchAppend::new(sql.clone());
    batch.push::<Tally>(a, 1, &[added(a, 2)], &metadata);
    batch.push::<Tally>(b, 0, &[added(b, 5)], &metadata);
    batch.push::<Tally>(b, 0, &[added(b, 1)], &metadata);
    batch.settle::<Tally>(a, &Total(3), &rows);
    batch.settle::<Tally>(b, &Total(6), &rows);
    let mut tx = store.pool().begin().await.unwrap();
    batch.write(&store, &mut tx, None).await.unwrap();
    tx.commit().await.unwrap();
    for (id, total) in [(a, 3), (b, 6)] {
        let stored = row(&store, id).await.unwrap();
        assert_eq!((stored.total, stored.version), (total, 2));
        assert_eq!(stored.updated_at, recorded_at(&store, id, 2).await);
        assert_eq!(
            snapshot_of(&store, id).await,
            Some((2, serde_json::json!(total)))
        );
    }

    // One stream stale (a expects 1, is at 2): nothing of the batch lands, not b's event,
    // row (version 3) or snapshot, which alone would all be newer than what is stored, even
    // when the caller commits after the failure.
    let mut batch = BatchAppend::new(sql.clone());
    batch.push::<Tally>(b, 2, &[added(b, 10)], &metadata);
    batch.push::<Tally>(a, 1, &[added(a, 10)], &metadata);
    batch.settle::<Tally>(a, &Total(13), &rows);
    batch.settle::<Tally>(b, &Total(16), &rows);
    let mut tx = store.pool().begin().await.unwrap();
    let stale = batch.write(&store, &mut tx, None).await;
    assert!(
        matches!(&stale, Err(StoreError::Conflict { stream_id, actual: 2, .. })
            if *stream_id == Tally::stream_id(a)),
        "{stale:?}"
    );
    tx.commit().await.unwrap();
    for (id, total) in [(a, 3), (b, 6)] {
        assert_eq!(
            store.stream_version(&Tally::stream_id(id)).await.unwrap(),
            2
        );
        let stored = row(&store, id).await.unwrap();
        assert_eq!((stored.total, stored.version), (total, 2));
        assert_eq!(
            snapshot_of(&store, id).await,
            Some((2, serde_json::json!(total)))
        );
    }

    // Streams go in the order of their types as put, whatever the order pushed: the mark
    // before the tally.
    let mut batch = BatchAppend::new(sql.clone()).then::<Mark>().then::<Tally>();
    batch.push::<Tally>(a, 2, &[added(a, 1)], &metadata);
    batch.push::<Mark>(a, 0, &[added(a, 1)], &metadata);
    batch.settle::<Tally>(a, &Total(4), &rows);
    let mut tx = store.pool().begin().await.unwrap();
    batch.write(&store, &mut tx, None).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        position(&store, &Mark::stream_id(a)).await < position(&store, &Tally::stream_id(a)).await
    );

    // A statement without the rows of every inline projection: the store folds them in the
    // transaction instead, to the same row, and the snapshots are still written.
    let mut batch = BatchAppend::new(batch_sql::<Tally>(&store, &[], &[]));
    batch.push::<Tally>(b, 2, &[added(b, 4)], &metadata);
    batch.settle::<Tally>(b, &Total(10), &rows);
    let mut tx = store.pool().begin().await.unwrap();
    batch.write(&store, &mut tx, None).await.unwrap();
    tx.commit().await.unwrap();
    let stored = row(&store, b).await.unwrap();
    assert_eq!((stored.total, stored.version), (10, 3));
    assert_eq!(stored.updated_at, recorded_at(&store, b, 3).await);
    assert_eq!(
        snapshot_of(&store, b).await,
        Some((3, serde_json::json!(10)))
    );
}
