//! One batch of messages, recorded in ONE transaction: the batch's streams locked (in a fixed
//! order, so replicas sharing the durable consumer wait for each other rather than deadlock),
//! the already-recorded ids, every stream's recorded version and the streams the handlers
//! declared they will load ([`Reaction::reads`]) found in one query, the events that are next
//! in their stream handed to every handler at once, and all their inbox rows inserted in one
//! statement (a handler's own, or the consumer's with the rows a projection left for it:
//! [`Recording::defer`]). [`plan`] decides, without IO, what becomes of each
//! event; [`record`] runs the transaction, and [`record_retrying`] runs it again while
//! [`fate::retry_now`] says so.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::fate::{self, Now};
use super::{Delivery, HandleError, Reaction};
use crate::envelope::ForeignEvent;
use crate::inbox::{self, Recording};
use crate::preload::Reads;
use crate::retry::Backoff;
use crate::EventStore;

/// Immediate retries of a batch whose reaction met a concurrent write, before the batch is
/// split into single messages (and a single one is handed back).
const CONFLICT_RETRIES: u32 = 8;

/// What becomes of one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Next in its stream: applied in this batch's transaction.
    Apply,
    /// Its id is recorded already, or earlier in this batch: acknowledged without effect.
    Duplicate,
    /// An earlier version of its stream is not recorded yet: parked until it is.
    Early { recorded: i64 },
    /// Another event is recorded at its stream version (a forged message, or the producer's
    /// database restored from a backup writing new events at versions already received).
    Conflict,
}

/// The verdict on each event of a batch, and the order the applied ones take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// One per event, in the batch's order.
    pub verdicts: Vec<Verdict>,
    /// Indexes of the applied events, in the order they are applied: per stream in version
    /// order, otherwise in the batch's order.
    pub apply: Vec<usize>,
    /// Each stream's recorded version once the batch is committed.
    pub recorded: HashMap<String, i64>,
}

/// Decides what becomes of each event, given the ids the inbox holds (`known`) and each
/// stream's highest recorded version (`recorded`; absent: none). An event that arrives before
/// its predecessor but whose predecessor comes later in the same batch is applied right after
/// it.
pub(crate) fn plan(
    events: &[&ForeignEvent],
    known: &HashSet<Uuid>,
    recorded: &HashMap<String, i64>,
) -> Plan {
    let mut verdicts = vec![Verdict::Duplicate; events.len()];
    let mut apply = Vec::new();
    let mut versions: HashMap<String, i64> = HashMap::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    // Early events of this batch, by stream, in version order.
    let mut waiting: HashMap<&str, BTreeMap<(i64, usize), ()>> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        if known.contains(&event.event_id) || seen.contains(&event.event_id) {
            continue;
        }
        let current = *versions
            .entry(event.stream_id.clone())
            .or_insert_with(|| recorded.get(&event.stream_id).copied().unwrap_or(0));
        if event.stream_version > current + 1 {
            waiting
                .entry(&event.stream_id)
                .or_default()
                .insert((event.stream_version, i), ());
            continue;
        }
        if event.stream_version <= current {
            verdicts[i] = Verdict::Conflict;
            continue;
        }
        verdicts[i] = Verdict::Apply;
        apply.push(i);
        seen.insert(event.event_id);
        let mut current = event.stream_version;
        // Successors that came earlier in the batch.
        if let Some(queue) = waiting.get_mut(event.stream_id.as_str()) {
            while let Some(entry) = queue.first_entry() {
                let (version, j) = *entry.key();
                if version > current + 1 {
                    break;
                }
                entry.remove();
                let id = events[j].event_id;
                if seen.contains(&id) {
                    verdicts[j] = Verdict::Duplicate;
                } else if version <= current {
                    verdicts[j] = Verdict::Conflict;
                } else {
                    verdicts[j] = Verdict::Apply;
                    apply.push(j);
                    seen.insert(id);
                    current = version;
                }
            }
        }
        versions.insert(event.stream_id.clone(), current);
    }
    for (stream, queue) in waiting {
        let current = versions.get(stream).copied().unwrap_or(0);
        for (_, j) in queue.into_keys() {
            verdicts[j] = if seen.contains(&events[j].event_id) {
                Verdict::Duplicate
            } else {
                Verdict::Early { recorded: current }
            };
        }
    }
    Plan {
        verdicts,
        apply,
        recorded: versions,
    }
}

/// Why a batch's transaction was rolled back.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A handler refused or failed; its name and error.
    Handler(String, HandleError),
    /// The consumer's own SQL failed.
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::Sql(e)
    }
}

/// A committed batch: the plan it carried out, for each conflicting event the id that holds
/// its stream version, and whether a reaction appended events ([`Recording::appended`]).
#[derive(Debug)]
pub(crate) struct Committed {
    pub plan: Plan,
    pub conflicts: HashMap<usize, Option<Uuid>>,
    pub appended: bool,
}

/// Told once that a batch's transaction is committing (dropped unsent if it never does). It
/// holds its streams' locks until the commit ends, so a transaction begun for the next batch
/// from then on queues behind it on every stream the two share: the consumer may start the
/// next batch then ([`super::Consumer`]'s batch in flight), and its work overlaps this one's
/// commit.
pub(crate) type Committing = Option<tokio::sync::oneshot::Sender<()>>;

/// Records a batch in one transaction and runs the handlers on the events that are next in
/// their streams; commits only if every handler succeeds. Sends `committing` as it commits.
pub(crate) async fn record(
    store: &EventStore,
    handlers: &[Arc<dyn Reaction>],
    events: &[&ForeignEvent],
    committing: &mut Committing,
) -> Result<Committed, Failure> {
    let mut streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut conn = store.pool().acquire().await?;
    let mut tx = conn.begin_with(inbox::begin_and_lock(&streams)).await?;
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let mut reads = Reads::default();
    for handler in handlers {
        handler.reads(events, &mut reads);
    }
    let inbox::Recorded {
        known,
        versions,
        preloaded,
    } = inbox::recorded(&mut tx, &ids, &streams, &reads).await?;
    let plan = plan(events, &known, &versions);
    let mut conflicts = HashMap::new();
    for (i, verdict) in plan.verdicts.iter().enumerate() {
        if *verdict == Verdict::Conflict {
            let event = events[i];
            let holder = match plan.apply.iter().find(|&&j| {
                events[j].stream_id == event.stream_id
                    && events[j].stream_version == event.stream_version
            }) {
                Some(&j) => Some(events[j].event_id),
                None => {
                    inbox::recorded_at_version(&mut tx, &event.stream_id, event.stream_version)
                        .await?
                }
            };
            conflicts.insert(i, holder);
        }
    }
    let mut appended = false;
    if !plan.apply.is_empty() {
        let applying: Vec<&ForeignEvent> = plan.apply.iter().map(|&i| events[i]).collect();
        // A reaction that writes in one statement may record the inbox rows in it.
        let recording = Recording::new(&applying, preloaded);
        for handler in handlers {
            handler
                .handle_recording(&mut tx, &applying, &recording)
                .await
                .map_err(|e| Failure::Handler(handler.name().to_owned(), e))?;
        }
        inbox::write_left(&mut tx, &recording).await?;
        appended = recording.has_appended();
    }
    if let Some(sender) = committing.take() {
        let _ = sender.send(());
    }
    tx.commit().await?;
    Ok(Committed {
        plan,
        conflicts,
        appended,
    })
}

/// How recording a batch ended, after the retries in place.
pub(super) enum Recorded {
    Committed(Committed),
    /// Rolled back by a handler's failure or the consumer's own SQL.
    Failed(Failure),
    /// Shut down while the database was unreachable: nothing was recorded.
    Stopped,
}

/// Runs the batch's transaction, and runs it again while [`fate::retry_now`] says so: in place
/// while the database is unreachable (keeping the messages from redelivery), at once after a
/// race. After a commit, wakes the relay if a reaction appended events, and parked messages
/// (here or at a replica) otherwise. Sends `committing` as the try that commits does.
pub(super) async fn record_retrying(
    store: &EventStore,
    handlers: &[Arc<dyn Reaction>],
    deliveries: &[Delivery],
    shutdown: &CancellationToken,
    committing: &mut Committing,
) -> Recorded {
    let events: Vec<&ForeignEvent> = deliveries.iter().map(|d| &d.event).collect();
    let span = tracing::debug_span!("batch", messages = events.len());
    let mut backoff = Backoff::default();
    let mut races = 0;
    loop {
        let failure = match record(store, handlers, &events, committing)
            .instrument(span.clone())
            .await
        {
            Ok(committed) => {
                if committed.appended {
                    store.notify_appended();
                } else if !committed.plan.apply.is_empty() {
                    // Recorded only: a replica may hold the successors parked.
                    store.wakeup.recorded();
                }
                return Recorded::Committed(committed);
            }
            Err(failure) => failure,
        };
        match fate::retry_now(&failure, races, CONFLICT_RETRIES) {
            Some(Now::InPlace(error)) => {
                tracing::warn!(error, "consumer cannot reach the database; retrying");
                for delivery in deliveries {
                    fate::in_progress(&delivery.message).await;
                }
                backoff.wait(shutdown).await;
                if shutdown.is_cancelled() {
                    return Recorded::Stopped;
                }
            }
            Some(Now::FreshState(error)) => {
                races += 1;
                tracing::debug!(races, error, "a concurrent write; recording again");
                // Short, growing and jittered, so two writers racing on one stream stop
                // colliding in lockstep.
                crate::retry::race_pause(
                    races,
                    Duration::from_micros(100),
                    Duration::from_micros(500),
                )
                .await;
            }
            None => return Recorded::Failed(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metadata;

    fn event(stream: &str, version: i64) -> ForeignEvent {
        ForeignEvent {
            event_id: Uuid::now_v7(),
            event_type: "Happened".to_owned(),
            stream_id: stream.to_owned(),
            stream_version: version,
            source_position: version,
            schema_version: 1,
            payload: serde_json::json!({}),
            metadata: Metadata::default(),
        }
    }

    fn planned(events: &[ForeignEvent], known: &[Uuid], recorded: &[(&str, i64)]) -> Plan {
        let refs: Vec<&ForeignEvent> = events.iter().collect();
        let known = known.iter().copied().collect();
        let recorded = recorded
            .iter()
            .map(|(s, v)| ((*s).to_owned(), *v))
            .collect();
        plan(&refs, &known, &recorded)
    }

    #[test]
    fn events_next_in_their_streams_are_applied_in_order() {
        let events = [event("a", 1), event("b", 4), event("a", 2)];
        let plan = planned(&events, &[], &[("b", 3)]);
        assert_eq!(plan.verdicts, [Verdict::Apply; 3]);
        assert_eq!(plan.apply, [0, 1, 2]);
        assert_eq!(plan.recorded["a"], 2);
        assert_eq!(plan.recorded["b"], 4);
    }

    #[test]
    fn an_event_whose_predecessor_comes_later_in_the_batch_is_applied_after_it() {
        let events = [event("a", 3), event("a", 2), event("a", 1)];
        let plan = planned(&events, &[], &[]);
        assert_eq!(plan.apply, [2, 1, 0]);
        assert_eq!(plan.recorded["a"], 3);
    }

    #[test]
    fn duplicates_inside_the_batch_and_across_batches_are_recognised() {
        let recorded_earlier = event("a", 1);
        let next = event("a", 2);
        let events = [recorded_earlier.clone(), next.clone(), next];
        let plan = planned(&events, &[recorded_earlier.event_id], &[("a", 1)]);
        assert_eq!(
            plan.verdicts,
            [Verdict::Duplicate, Verdict::Apply, Verdict::Duplicate]
        );
        assert_eq!(plan.apply, [1]);
    }

    #[test]
    fn a_gap_leaves_the_successors_early_naming_the_recorded_version() {
        let events = [event("a", 5), event("a", 3), event("a", 6)];
        let plan = planned(&events, &[], &[("a", 2)]);
        assert_eq!(
            plan.verdicts,
            [
                Verdict::Early { recorded: 3 },
                Verdict::Apply,
                Verdict::Early { recorded: 3 }
            ]
        );
    }

    #[test]
    fn a_different_event_claiming_a_recorded_version_is_a_conflict_not_a_duplicate() {
        let events = [event("a", 2), event("a", 3), event("a", 3)];
        let plan = planned(&events, &[], &[("a", 2)]);
        assert_eq!(
            plan.verdicts,
            [Verdict::Conflict, Verdict::Apply, Verdict::Conflict]
        );
        assert_eq!(plan.recorded["a"], 3);
    }

    #[test]
    fn a_conflict_among_waiting_successors_is_found_when_they_are_released() {
        // Two different events claim version 3; both arrive before version 2.
        let events = [event("a", 3), event("a", 3), event("a", 2)];
        let plan = planned(&events, &[], &[("a", 1)]);
        assert_eq!(plan.apply, [2, 0]);
        assert_eq!(plan.verdicts[1], Verdict::Conflict);
    }
}

/// [`record`] against a real database: whether the committed batch says a reaction appended,
/// which is what wakes the relay after the commit.
#[cfg(test)]
mod recording_tests {
    use futures::future::BoxFuture;
    use sqlx::PgConnection;

    use super::*;
    use crate::consumer::BatchReaction;
    use crate::snapshot;
    use crate::store::BatchSql;
    use crate::testing::TestDb;
    use crate::{ExpectedVersion, Metadata, NewEvent, StreamAppend};

    /// Appends one event per handled event, in the statement that may take the inbox rows
    /// and the rows left for the upserts it was given; with any, it counts, right after its
    /// statement, the rows of `left_rows` its transaction sees.
    struct Appends {
        store: EventStore,
        takes: &'static [crate::read_model::RowUpsert],
        seen: std::sync::Mutex<Vec<i64>>,
    }

    impl Appends {
        fn new(store: &EventStore, takes: &'static [crate::read_model::RowUpsert]) -> Self {
            let (store, seen) = (store.clone(), Default::default());
            Appends { store, takes, seen }
        }
    }

    impl BatchReaction for Appends {
        const NAME: &'static str = "appends";

        fn handle_batch<'a>(
            &'a self,
            tx: &'a mut PgConnection,
            events: &'a [&'a ForeignEvent],
            recording: Option<&'a Recording<'a>>,
        ) -> BoxFuture<'a, Result<(), HandleError>> {
            Box::pin(async move {
                let appends: Vec<StreamAppend> = events
                    .iter()
                    .map(|e| StreamAppend {
                        stream_id: format!("echo-{}", e.event_id.simple()),
                        expected: ExpectedVersion::NoStream,
                        events: vec![NewEvent::new("Echoed", serde_json::json!({}))],
                    })
                    .collect();
                let sql = BatchSql::new(&[], self.takes);
                self.store
                    .append_batch(&mut *tx, &appends, &sql, &[], &[], recording)
                    .await
                    .map_err(|e| HandleError::from_store(e, "echoing"))?;
                if !self.takes.is_empty() {
                    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM left_rows")
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                    self.seen.lock().unwrap().push(written);
                }
                Ok(())
            })
        }
    }

    /// Writes nothing of its own (as a projection into a table of its own would not append).
    struct Reads;

    impl BatchReaction for Reads {
        const NAME: &'static str = "reads";

        fn handle_batch<'a>(
            &'a self,
            _tx: &'a mut PgConnection,
            _events: &'a [&'a ForeignEvent],
            _recording: Option<&'a Recording<'a>>,
        ) -> BoxFuture<'a, Result<(), HandleError>> {
            Box::pin(async { Ok(()) })
        }
    }

    /// Declares the streams named in its events' payloads (`{"reads": [...]}`) at schema 1,
    /// and the inbox rows of the ids named (`{"rows": [...]}`), and keeps what the consumer's
    /// read of the batch preloaded of them.
    #[derive(Default)]
    struct Declares {
        streams: std::sync::Mutex<Vec<(String, Option<snapshot::FoundRead>)>>,
        /// Per batch: what an undeclared id's rows gave, then the declared ones'.
        rows: std::sync::Mutex<Vec<(bool, Option<Rows>)>>,
    }

    type Rows = HashMap<Uuid, serde_json::Value>;

    fn declared<T: serde::de::DeserializeOwned>(event: &ForeignEvent, field: &str) -> Vec<T> {
        serde_json::from_value(event.payload[field].clone()).unwrap_or_default()
    }

    impl BatchReaction for Declares {
        const NAME: &'static str = "declares";

        fn reads(&self, events: &[&ForeignEvent], reads: &mut crate::preload::Reads) {
            for stream in events.iter().flat_map(|e| declared::<String>(e, "reads")) {
                reads.stream(stream, 1);
            }
            let ids = events.iter().flat_map(|e| declared::<Uuid>(e, "rows"));
            reads.rows("inbox", "event_id", ids);
        }

        fn handle_batch<'a>(
            &'a self,
            _tx: &'a mut PgConnection,
            events: &'a [&'a ForeignEvent],
            recording: Option<&'a Recording<'a>>,
        ) -> BoxFuture<'a, Result<(), HandleError>> {
            Box::pin(async move {
                let preloaded = recording.expect("offered in the consumer").preloaded();
                let mut seen = self.streams.lock().unwrap();
                for stream in events.iter().flat_map(|e| declared::<String>(e, "reads")) {
                    let found = preloaded.take(&stream, 1);
                    seen.push((stream, found));
                }
                let ids: Vec<Uuid> = events.iter().flat_map(|e| declared(e, "rows")).collect();
                let undeclared = preloaded.rows::<serde_json::Value>("inbox", &[Uuid::now_v7()]);
                let rows = preloaded.rows("inbox", &ids).map(Result::unwrap);
                self.rows.lock().unwrap().push((undeclared.is_none(), rows));
                Ok(())
            })
        }
    }

    /// A table of one row per handled event, written by [`LEFT`] from rows left with the
    /// recording.
    const LEFT: crate::read_model::RowUpsert = crate::read_model::RowUpsert {
        name: "left",
        sql: "INSERT INTO left_rows (id, version) \
              SELECT r.id, r.version \
              FROM {input}, jsonb_populate_record(NULL::left_rows, {input}.data) AS r \
              ON CONFLICT (id) DO UPDATE SET version = excluded.version \
              WHERE left_rows.version < excluded.version",
    };

    /// Leaves a row per event with the recording ([`Recording::defer`]); writes nothing.
    struct Leaves;

    impl BatchReaction for Leaves {
        const NAME: &'static str = "leaves";

        fn handle_batch<'a>(
            &'a self,
            _tx: &'a mut PgConnection,
            events: &'a [&'a ForeignEvent],
            recording: Option<&'a Recording<'a>>,
        ) -> BoxFuture<'a, Result<(), HandleError>> {
            let rows = events
                .iter()
                .map(|e| serde_json::json!({ "id": e.event_id, "version": e.stream_version }))
                .collect();
            recording
                .expect("offered in the consumer")
                .defer(LEFT, rows);
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn rows_left_with_the_recording_are_written_by_the_statement_that_takes_them_or_by_the_consumer(
    ) {
        let db = TestDb::new().await;
        let store = db.store();
        sqlx::query("CREATE TABLE left_rows (id uuid PRIMARY KEY, version bigint NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        let count = |table: &'static str| {
            let pool = db.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}"))
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };

        // Left before the appending reaction runs: its statement writes them.
        let taking = Arc::new(Appends::new(&store, &[LEFT]));
        let handlers: Vec<Arc<dyn Reaction>> = vec![Arc::new(Leaves), taking.clone()];
        let (a, b) = (event("order-1"), event("order-2"));
        let committed = record(&store, &handlers, &[&a, &b], &mut None)
            .await
            .unwrap();
        assert!(committed.appended);
        assert_eq!(
            *taking.seen.lock().unwrap(),
            [2],
            "the rows were written in the append's statement"
        );
        assert_eq!(count("left_rows").await, 2);
        assert_eq!(count("inbox").await, 2);

        // Left with nobody to take them (no reaction appends, or it ran first): the consumer
        // writes them with the inbox rows.
        for (stream, handlers) in [
            ("order-3", vec![Arc::new(Leaves) as Arc<dyn Reaction>]),
            (
                "order-4",
                vec![Arc::new(Appends::new(&store, &[])), Arc::new(Leaves)],
            ),
        ] {
            let c = event(stream);
            record(&store, &handlers, &[&c], &mut None).await.unwrap();
            let row: Option<i64> =
                sqlx::query_scalar("SELECT version FROM left_rows WHERE id = $1")
                    .bind(c.event_id)
                    .fetch_optional(&db.pool)
                    .await
                    .unwrap();
            assert_eq!(row, Some(1), "the row left for the consumer was written");
        }
        assert_eq!(count("left_rows").await, 4);
        assert_eq!(count("inbox").await, 4);
    }

    fn event(stream: &str) -> ForeignEvent {
        ForeignEvent {
            event_id: Uuid::now_v7(),
            event_type: "Happened".to_owned(),
            stream_id: stream.to_owned(),
            stream_version: 1,
            source_position: 1,
            schema_version: 1,
            payload: serde_json::json!({}),
            metadata: Metadata::default(),
        }
    }

    #[tokio::test]
    async fn the_streams_a_reaction_declares_are_read_with_the_inbox_in_one_read() {
        let db = TestDb::new().await;
        let store = db.store();
        let new = |n: usize| {
            (0..n)
                .map(|i| NewEvent::new("Counted", serde_json::json!({ "n": i })))
                .collect::<Vec<_>>()
        };
        store
            .append("thing-1", ExpectedVersion::NoStream, &new(3))
            .await
            .unwrap();
        store
            .append("thing-2", ExpectedVersion::NoStream, &new(4))
            .await
            .unwrap();
        let mut conn = db.pool.acquire().await.unwrap();
        snapshot::save(
            &mut conn,
            1,
            &[("thing-2", 3, &serde_json::json!({"n": 3}))],
        )
        .await
        .unwrap();
        // Stored in another schema: ignored, so thing-1 comes whole.
        snapshot::save(
            &mut conn,
            2,
            &[("thing-1", 2, &serde_json::json!({"n": 2}))],
        )
        .await
        .unwrap();
        drop(conn);

        let declares = Arc::new(Declares::default());
        let handlers: Vec<Arc<dyn Reaction>> = vec![declares.clone()];
        let mut first = event("order-1");
        first.payload = serde_json::json!({ "reads": ["thing-1", "thing-2", "thing-3"] });
        record(&store, &handlers, &[&first], &mut None)
            .await
            .unwrap();

        let seen = std::mem::take(&mut *declares.streams.lock().unwrap());
        let found: HashMap<String, snapshot::FoundRead> = seen
            .into_iter()
            .map(|(stream, found)| {
                (
                    stream.clone(),
                    found.unwrap_or_else(|| panic!("{stream} was not preloaded")),
                )
            })
            .collect();
        let versions = |stream: &str| -> Vec<i64> {
            found[stream].1.iter().map(|e| e.stream_version).collect()
        };
        assert_eq!(
            found["thing-1"].0, None,
            "a snapshot of another schema is not used"
        );
        assert_eq!(versions("thing-1"), [1, 2, 3]);
        assert_eq!(found["thing-2"].0, Some((3, serde_json::json!({"n": 3}))));
        assert_eq!(
            versions("thing-2"),
            [4],
            "only the events after the snapshot"
        );
        assert_eq!(found["thing-3"], (None, vec![]), "a stream without events");

        // What the inbox holds is still told apart from the streams: a redelivery is a
        // duplicate, and the next version of its stream follows the recorded one. Rows
        // declared are read too (here the inbox's own: the first event's, and one of an id
        // never seen, which has none).
        let mut next = event("order-1");
        next.stream_version = 2;
        next.payload = serde_json::json!({ "rows": [first.event_id, Uuid::now_v7()] });
        let committed = record(&store, &handlers, &[&first, &next], &mut None)
            .await
            .unwrap();
        assert_eq!(
            committed.plan.verdicts,
            [Verdict::Duplicate, Verdict::Apply]
        );
        assert_eq!(committed.plan.recorded["order-1"], 2);
        let rows = std::mem::take(&mut *declares.rows.lock().unwrap());
        let (undeclared_asked_for, declared) = &rows[1];
        assert!(undeclared_asked_for, "rows not declared are not offered");
        let declared = declared.as_ref().expect("declared rows are offered");
        assert_eq!(declared.len(), 1, "{declared:?}");
        assert_eq!(declared[&first.event_id]["stream_id"], "order-1");
    }

    #[tokio::test]
    async fn a_batch_says_it_appended_only_when_a_reaction_appended() {
        let db = TestDb::new().await;
        let store = db.store();
        let appends: Vec<Arc<dyn Reaction>> =
            vec![Arc::new(Reads), Arc::new(Appends::new(&store, &[]))];
        let reads: Vec<Arc<dyn Reaction>> = vec![Arc::new(Reads)];

        let first = event("order-1");
        let committed = record(&store, &appends, &[&first], &mut None)
            .await
            .unwrap();
        assert!(committed.appended, "the echo was appended");
        let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(recorded, 1, "the inbox row went in the append's statement");

        let second = event("order-2");
        let committed = record(&store, &reads, &[&second], &mut None).await.unwrap();
        assert!(!committed.appended, "nothing was appended");

        // A duplicate is applied by no reaction, so nothing is appended either.
        let committed = record(&store, &appends, &[&first], &mut None)
            .await
            .unwrap();
        assert!(!committed.appended, "a duplicate appends nothing");
    }
}
