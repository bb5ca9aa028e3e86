//! A row-per-aggregate read model (`read_model::apply_rows`) on a real database: a stream's
//! first event folds from nothing without reading its row, later events read only the rows
//! they continue, in one query per batch, and an event applied twice changes nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use event_store::read_model::{apply_rows, RowModel};
use event_store::testing::TestDb;
use event_store::{wire_events, Metadata, RecordedEvent};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

wire_events! {
    TallyEvent { Counted }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub tally: Uuid,
    pub by: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct Tally {
    tally: Uuid,
    total: i64,
    version: i64,
}

/// The keys of every `load`, one entry per call.
static LOADS: Mutex<Vec<Vec<Uuid>>> = Mutex::new(Vec::new());
static POSITION: AtomicUsize = AtomicUsize::new(1);

struct Tallies;

impl RowModel for Tallies {
    const NAME: &'static str = "tallies";
    const TABLES: &'static [&'static str] = &["tallies"];
    type Event = TallyEvent;
    type Recorded = RecordedEvent;
    type Row = Tally;

    fn key(event: &TallyEvent) -> Option<Uuid> {
        match event {
            TallyEvent::Counted(e) => Some(e.tally),
        }
    }

    fn row_key(row: &Tally) -> Uuid {
        row.tally
    }

    fn starts_stream(_event: &TallyEvent, recorded: &RecordedEvent) -> bool {
        recorded.stream_version == 1
    }

    fn next_row(
        current: Option<&Tally>,
        event: &TallyEvent,
        recorded: &RecordedEvent,
    ) -> anyhow::Result<Option<Tally>> {
        let TallyEvent::Counted(e) = event;
        let (total, version) = current.map_or((0, 0), |row| (row.total, row.version));
        if version >= recorded.stream_version {
            return Ok(None);
        }
        Ok(Some(Tally {
            tally: e.tally,
            total: total + e.by,
            version: recorded.stream_version,
        }))
    }

    fn load<'a>(
        conn: &'a mut PgConnection,
        keys: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Tally>, sqlx::Error>> {
        LOADS.lock().expect("the loads").push(keys.to_vec());
        Box::pin(
            sqlx::query_as("SELECT tally, total, version FROM tallies WHERE tally = ANY($1)")
                .bind(keys)
                .fetch_all(conn),
        )
    }

    fn upsert(conn: &mut PgConnection, rows: Vec<Tally>) -> BoxFuture<'_, Result<(), sqlx::Error>> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.tally).collect();
        let totals: Vec<i64> = rows.iter().map(|r| r.total).collect();
        let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO tallies (tally, total, version) \
                 SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[]) \
                 ON CONFLICT (tally) DO UPDATE SET total = excluded.total, \
                 version = excluded.version WHERE tallies.version < excluded.version",
            )
            .bind(ids)
            .bind(totals)
            .bind(versions)
            .execute(conn)
            .await
            .map(|_| ())
        })
    }
}

fn counted(tally: Uuid, version: i64, by: i64) -> RecordedEvent {
    let position = POSITION.fetch_add(1, Ordering::SeqCst) as i64;
    RecordedEvent {
        position,
        stream_id: format!("tally-{tally}"),
        stream_version: version,
        event_id: Uuid::now_v7(),
        event_type: "Counted".to_owned(),
        schema_version: 1,
        payload: serde_json::json!({ "tally": tally, "by": by }),
        metadata: Metadata::default(),
        recorded_at: chrono::Utc::now(),
    }
}

async fn rows(conn: &mut PgConnection) -> Vec<Tally> {
    sqlx::query_as("SELECT tally, total, version FROM tallies ORDER BY total")
        .fetch_all(conn)
        .await
        .expect("reading the tallies")
}

fn loads() -> Vec<Vec<Uuid>> {
    std::mem::take(&mut *LOADS.lock().expect("the loads"))
}

// One test, so the statics above are not shared by tests running at once.
#[tokio::test]
async fn rows_are_read_only_where_a_batch_continues_them_and_a_repeat_changes_nothing() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.expect("a connection");
    sqlx::query("CREATE TABLE tallies (tally uuid PRIMARY KEY, total int8, version int8)")
        .execute(&mut *conn)
        .await
        .expect("creating the table");
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let (a1, a2) = (counted(a, 1, 1), counted(a, 2, 2));

    // A stream's first event: its row folds from nothing, and nothing is read.
    apply_rows::<Tallies>(&mut conn, std::slice::from_ref(&a1))
        .await
        .expect("applying a1");
    assert_eq!(loads(), Vec::<Vec<Uuid>>::new(), "no read for a new row");

    // The next event continues the row: it is read, once.
    apply_rows::<Tallies>(&mut conn, std::slice::from_ref(&a2))
        .await
        .expect("applying a2");
    assert_eq!(loads(), vec![vec![a]]);

    // Applied again (a rebuild over live rows): nothing changes.
    apply_rows::<Tallies>(&mut conn, &[a1.clone(), a2.clone()])
        .await
        .expect("applying a1 and a2 again");
    assert_eq!(
        rows(&mut conn).await,
        vec![Tally {
            tally: a,
            total: 3,
            version: 2
        }]
    );
    assert_eq!(loads(), Vec::<Vec<Uuid>>::new(), "a1 starts the stream");

    // A batch starting one stream and continuing another reads only the one it continues.
    apply_rows::<Tallies>(&mut conn, &[counted(b, 1, 10), counted(a, 3, 4)])
        .await
        .expect("applying a batch");
    assert_eq!(loads(), vec![vec![a]]);
    assert_eq!(
        rows(&mut conn).await,
        vec![
            Tally {
                tally: a,
                total: 7,
                version: 3
            },
            Tally {
                tally: b,
                total: 10,
                version: 1
            }
        ]
    );
}
