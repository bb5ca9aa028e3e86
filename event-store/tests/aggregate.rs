//! The command executor (`aggregate::Commands`) on a real store: a command that loses a race
//! with a concurrent append is decided again on fresh state; a corrupt stream is `Corrupt`,
//! not a database error; snapshots are written as the policy says and loaded again.
// Its helpers unwrap too, and clippy.toml's allow-unwrap-in-tests covers test functions only.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use event_store::aggregate::{Aggregate, CommandError, Commands, Fold, Loaded, On, SnapshotPolicy};
use event_store::idempotency::Kept;
use event_store::testing::TestDb;
use event_store::{wire_events, EventStore, ExpectedVersion, Metadata, NewEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

wire_events! {
    CounterEvent { Incremented }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Incremented {
    pub by: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Count(i64);

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

/// Set by a test: the next `decide` first lets another writer append to the stream, as a
/// concurrent request would between this command's load and its append.
static INTERLOPE: AtomicBool = AtomicBool::new(false);
static DECISIONS: AtomicUsize = AtomicUsize::new(0);
static INTERLOPER: std::sync::Mutex<Option<(String, String)>> = std::sync::Mutex::new(None);

struct Counter;

impl Fold for Counter {
    type State = Count;
    type Event = CounterEvent;
    const SNAPSHOT: Option<SnapshotPolicy> = Some(SnapshotPolicy {
        schema_version: 1,
        every: 4,
    });

    fn stream_id(id: Uuid) -> String {
        format!("counter-{id}")
    }

    fn evolve(state: Count, event: &CounterEvent) -> Count {
        match event {
            CounterEvent::Incremented(e) => Count(state.0 + e.by),
        }
    }
}

impl Aggregate for Counter {
    type Command = i64;
    type Error = Refused;

    fn decide(_state: &Count, by: i64) -> Result<Vec<CounterEvent>, Refused> {
        DECISIONS.fetch_add(1, Ordering::SeqCst);
        if INTERLOPE.swap(false, Ordering::SeqCst) {
            // Another writer, on its own connection and runtime, appends now.
            let (url, stream) = INTERLOPER.lock().unwrap().clone().unwrap();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                runtime.block_on(async {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    let event = NewEvent::new("Incremented", serde_json::json!({ "by": 100 }));
                    EventStore::new(pool)
                        .append(&stream, ExpectedVersion::Any, &[event])
                        .await
                        .unwrap();
                });
            })
            .join()
            .unwrap();
        }
        if by <= 0 {
            return Err(Refused);
        }
        Ok(vec![Incremented { by }.into()])
    }
}

/// The answer a command renders: the counter's state and version, read back by [`state_of`].
fn answer(done: &Loaded<Count>) -> Kept {
    Kept::json(200, None, &(&done.state, done.version))
}

fn state_of(kept: Kept) -> (Count, i64) {
    serde_json::from_slice(&kept.body).unwrap()
}

// One test, so the statics above are not shared by tests running at once.
#[tokio::test]
async fn commands_retry_a_lost_race_refuse_as_the_domain_says_and_snapshot_as_configured() {
    let db = TestDb::new().await;
    let store = db.store();
    let commands = Commands::<Counter>::new(store.clone());
    let id = Uuid::now_v7();
    let metadata = Metadata::default();

    let first = commands
        .execute(On::New(id), 1, &metadata, None, &answer)
        .await
        .unwrap();
    assert_eq!(state_of(first), (Count(1), 1));

    // Lost race: decided on version 1, the append finds version 2; decided again, it lands.
    *INTERLOPER.lock().unwrap() = Some((db.url.clone(), Counter::stream_id(id)));
    INTERLOPE.store(true, Ordering::SeqCst);
    DECISIONS.store(0, Ordering::SeqCst);
    let raced = commands
        .execute(On::Existing(id), 2, &metadata, None, &answer)
        .await
        .unwrap();
    assert_eq!(
        DECISIONS.load(Ordering::SeqCst),
        2,
        "decided again after the conflict"
    );
    assert_eq!(state_of(raced), (Count(103), 3));

    // The domain's refusal is the domain's error; nothing is appended.
    let refused = commands
        .execute(On::Existing(id), 0, &metadata, None, &answer)
        .await;
    assert!(
        matches!(refused, Err(CommandError::Domain(Refused))),
        "{refused:?}"
    );
    assert_eq!(
        store.stream_version(&Counter::stream_id(id)).await.unwrap(),
        3
    );

    // Four events folded on top of no snapshot: the command writes one at version 4, and the
    // next load starts from it.
    commands
        .execute(On::Existing(id), 1, &metadata, None, &answer)
        .await
        .unwrap();
    let loaded = commands.load(id).await.unwrap();
    assert_eq!(
        (loaded.loaded.state, loaded.loaded.version),
        (Count(104), 4)
    );
    assert_eq!(
        loaded.folded, 0,
        "loaded from the snapshot written at version 4"
    );

    // A stored event that does not decode is Corrupt (poison), not a database error.
    let broken = Uuid::now_v7();
    let event = NewEvent::new("Incremented", serde_json::json!({ "by": "many" }));
    store
        .append(
            &Counter::stream_id(broken),
            ExpectedVersion::NoStream,
            &[event],
        )
        .await
        .unwrap();
    let corrupt = commands
        .execute(On::Existing(broken), 1, &metadata, None, &answer)
        .await;
    assert!(
        matches!(corrupt, Err(CommandError::Corrupt(_))),
        "{corrupt:?}"
    );
}
