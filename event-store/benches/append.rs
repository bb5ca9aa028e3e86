//! Append throughput of the store beside raw INSERTs of the same rows, in one run against the
//! same Postgres, so the ratio means something on a shared, noisy machine.
//!
//!     cargo bench -p event-store --bench append -- --seconds 5
//!
//! Rows go to a fresh database; "raw" inserts the same columns into a table of the same shape
//! (identity position), one statement per transaction; "serialised" is the other known no-skip
//! cure (every append takes one transaction-level advisory lock), shown for comparison.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use event_store::testing::TestDb;
use event_store::{EventStore, ExpectedVersion, NewEvent};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent writers for single-event appends.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16, 64])]
    writers: Vec<usize>,
    /// Events per batch, and writers for the batch measurement.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, default_value_t = 4)]
    batch_writers: usize,
    /// cargo bench passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const RAW_TABLES: &str = r#"
CREATE TABLE raw_events (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id text NOT NULL, stream_version bigint NOT NULL, event_id uuid NOT NULL UNIQUE,
    event_type text NOT NULL, schema_version integer NOT NULL, payload jsonb NOT NULL,
    metadata jsonb NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(),
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    UNIQUE (stream_id, stream_version));
CREATE TABLE serial_events (LIKE raw_events INCLUDING ALL);
"#;

const RAW_INSERT: &str = "INSERT INTO raw_events \
    (stream_id, stream_version, event_id, event_type, schema_version, payload, metadata) \
    SELECT $1, $2 + t.ord, t.id, 'Counted', 1, t.payload, '{}' \
    FROM unnest($3::uuid[], $4::jsonb[]) WITH ORDINALITY AS t(id, payload, ord)";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Raw,
    Store,
    Serialised,
}

fn payload(i: usize) -> serde_json::Value {
    serde_json::json!({ "product_id": Uuid::new_v4(), "quantity": i % 7 + 1, "note": "benchmark row" })
}

async fn write(
    mode: Mode,
    pool: &PgPool,
    store: &EventStore,
    stream: &str,
    version: i64,
    n: usize,
) {
    let payloads: Vec<serde_json::Value> = (0..n).map(payload).collect();
    let result = match mode {
        Mode::Store => {
            let events: Vec<NewEvent> = payloads
                .into_iter()
                .map(|p| NewEvent::new("Counted", p))
                .collect();
            store
                .append(stream, ExpectedVersion::Exact(version), &events)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Mode::Raw => sqlx::query(RAW_INSERT)
            .bind(stream)
            .bind(version)
            .bind((0..n).map(|_| Uuid::new_v4()).collect::<Vec<_>>())
            .bind(&payloads)
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Mode::Serialised => async {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(4242)")
                .execute(&mut *tx)
                .await?;
            sqlx::query(&RAW_INSERT.replace("raw_events", "serial_events"))
                .bind(stream)
                .bind(version)
                .bind((0..n).map(|_| Uuid::new_v4()).collect::<Vec<_>>())
                .bind(&payloads)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await
        .map_err(|e: sqlx::Error| e.to_string()),
    };
    if let Err(e) = result {
        panic!("append failed: {e}");
    }
}

/// Events per second written by `writers` tasks for `duration`.
async fn measure(
    mode: Mode,
    pool: &PgPool,
    store: &EventStore,
    writers: usize,
    batch: usize,
    duration: Duration,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (pool, store) = (pool.clone(), store.clone());
            let (stop, written) = (stop.clone(), written.clone());
            tokio::spawn(async move {
                let stream = format!("bench-{}", Uuid::new_v4());
                let mut version = 0;
                while !stop.load(Ordering::Relaxed) {
                    write(mode, &pool, &store, &stream, version, batch).await;
                    version += batch as i64;
                    written.fetch_add(batch as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("writer task");
    }
    written.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Reads the whole store through `read_all` and checks nothing was skipped or repeated.
async fn check_no_skip(store: &EventStore, pool: &PgPool) {
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("count");
    let (mut after, mut read) = (0, 0i64);
    loop {
        let page = store.read_all(after, 10_000).await.expect("read_all");
        let Some(last) = page.last() else { break };
        assert!(page.windows(2).all(|w| w[0].position < w[1].position));
        after = last.position;
        read += page.len() as i64;
    }
    assert_eq!(
        read, stored,
        "read_all must hand out every stored event once"
    );
    println!("no-skip check: read_all returned all {stored} stored events once, in order");
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let duration = Duration::from_secs(args.seconds);
    let db = TestDb::new().await;
    sqlx::raw_sql(RAW_TABLES)
        .execute(&db.pool)
        .await
        .expect("raw tables");
    let max_writers = args
        .writers
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(args.batch_writers);
    let pool = PgPoolOptions::new()
        .max_connections(max_writers as u32 + 2)
        .connect(&db.url)
        .await
        .expect("bench pool");
    let store = EventStore::new(pool.clone());

    println!(
        "{:<28} {:>8} {:>12} {:>12} {:>7}",
        "measurement", "writers", "raw ev/s", "store ev/s", "ratio"
    );
    let row = |name: &str, writers: usize, raw: f64, other: f64| {
        println!(
            "{name:<28} {writers:>8} {raw:>12.0} {other:>12.0} {:>7.2}",
            other / raw
        )
    };
    for &writers in &args.writers {
        let raw = measure(Mode::Raw, &pool, &store, writers, 1, duration).await;
        let ours = measure(Mode::Store, &pool, &store, writers, 1, duration).await;
        row("append, 1 event per tx", writers, raw, ours);
    }
    let (b, bw) = (args.batch, args.batch_writers);
    let raw = measure(Mode::Raw, &pool, &store, bw, b, duration).await;
    let ours = measure(Mode::Store, &pool, &store, bw, b, duration).await;
    row(&format!("append, {b}-event batches"), bw, raw, ours);
    let raw = measure(Mode::Raw, &pool, &store, 16, 1, duration).await;
    let serial = measure(Mode::Serialised, &pool, &store, 16, 1, duration).await;
    row("serialised (lock), 1 per tx", 16, raw, serial);
    check_no_skip(&store, &pool).await;
    pool.close().await;
}
