//! Consumer throughput beside its two raw ceilings, in one run against the same Postgres and
//! NATS, so the ratios mean something on a shared, noisy machine.
//!
//!     cargo bench -p event-store --bench consumer -- --messages 20000
//!
//! N messages are published first (not timed) to a fresh JetStream stream exactly as a relay
//! publishes them: `envelope::encode` headers, `Nats-Msg-Id` = event id, subject
//! `<prefix>.<stream id>.<event type>`, a small `PriceChanged` payload, spread over many
//! streams with consecutive versions each, interleaved at random (per-stream order kept).
//! Then, on a fresh database for every run of the set:
//!
//! - **raw pull**: a durable pull consumer of its own (the consumer's settings) pulls all N
//!   and acks each with a plain `ack()`, nothing else;
//! - **raw insert**: the same N inbox rows plus the same per-stream counter upsert as the test
//!   reaction, in multi-row statements of `MAX_BATCH` rows, one transaction per batch, on one
//!   connection;
//! - **consumer**: `Consumer::run` on a durable consumer of its own, with a reaction whose
//!   `handle_batch` upserts one counter row per stream (set-based); timed from the start until
//!   the inbox holds all N rows (polled every 10 ms), then checked: every event once in the
//!   inbox in per-stream order, every counter at its stream's last version, no dead letters.
//!
//! Printed: the rates and the consumer's ratios to both raw rates, where the CPU went (from
//! `/proc`), and where the consumer's time went: its batch sizes as handed to the reaction,
//! each batch's wall time split around the reaction (its `batch` span and sqlx's per-statement
//! timings, both from tracing), and a SELECT 1 round trip and a raw COMMIT for scale.
//! `--repeat` runs the whole set several times. Diagnostics: `--statements` (the database's
//! top statements from pg_stat_statements, reset for that database only), `--steps` (the
//! consumer's transactions replayed without NATS, step by step), `--probe counters` (a cheaper
//! end-of-run probe), `--unconstrained` (the consumer's task outside tokio's cooperative
//! budget). `RUST_LOG` adds the usual log output on stderr.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, message::PublishMessage};
use clap::Parser;
use event_store::consumer::{
    Consumer, ConsumerConfig, ForeignEvent, HandleError, Reaction, MAX_BATCH,
};
use event_store::testing::{admin_database_url, connect_nats, unique, TestDb};
use event_store::{envelope, Metadata, RecordedEvent};
use futures::future::BoxFuture;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Messages published and consumed per measurement.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Event streams the messages are spread over (consecutive versions each).
    #[arg(long, default_value_t = 1_000)]
    streams: usize,
    /// Runs of the whole set of measurements.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Print the consumer database's top statements (pg_stat_statements) of each run.
    #[arg(long)]
    statements: bool,
    /// What tells that the consumer is done, polled every 10 ms: `inbox` (SELECT count(*) FROM
    /// inbox, a scan of every row recorded so far) or `counters` (the sum of the counters, one
    /// row per stream, written in the same transactions: the same answer, far cheaper).
    #[arg(long, value_enum, default_value_t = Probe::Inbox)]
    probe: Probe,
    /// Diagnostic: run the consumer's task outside tokio's cooperative budget
    /// (`tokio::task::unconstrained`), to see what its batches and rate are when taking
    /// "whatever the subscription has ready" is not cut short by the budget.
    #[arg(long)]
    unconstrained: bool,
    /// Diagnostic: after the consumer, replay its batch transactions (same sizes, same
    /// statements) without NATS, timing each step.
    #[arg(long)]
    steps: bool,
    /// Seconds the consumer may take before the run fails.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// cargo bench passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Probe {
    Inbox,
    Counters,
}

impl Probe {
    fn sql(self) -> &'static str {
        match self {
            Probe::Inbox => "SELECT count(*) FROM inbox",
            Probe::Counters => "SELECT coalesce(sum(n), 0)::int8 FROM counters",
        }
    }
}

/// The consumer's own JetStream settings (private in `consumer`), so the raw pull pulls the
/// way it does.
const ACK_WAIT: Duration = Duration::from_secs(5);
const PULL_BATCH: usize = 512;
const MAX_ACK_PENDING: i64 = 4096;
const IDLE_HEARTBEAT: Duration = Duration::from_secs(5);
const PULL_EXPIRES: Duration = Duration::from_secs(30);
const MAX_DELIVER: i64 = 10;

const TABLES: &str = r#"
CREATE TABLE counters (stream_id text PRIMARY KEY, version bigint NOT NULL, n bigint NOT NULL);
CREATE TABLE raw_counters (LIKE counters INCLUDING ALL);
CREATE TABLE raw_inbox (LIKE inbox INCLUDING ALL);
CREATE TABLE step_counters (LIKE counters INCLUDING ALL);
CREATE TABLE step_inbox (LIKE inbox INCLUDING ALL);
"#;

/// The inbox's own multi-row insert (`inbox::insert`), into `raw_inbox` (or `step_inbox`).
const RAW_INBOX_INSERT: &str = "INSERT INTO raw_inbox (event_id, stream_id, stream_version, \
        event_type, schema_version, payload, metadata, source_position) \
     SELECT event_id, stream_id, stream_version, event_type, schema_version, payload, \
            metadata, source_position \
     FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::int4[], $6::jsonb[], \
                 $7::jsonb[], $8::int8[]) WITH ORDINALITY \
          AS t(event_id, stream_id, stream_version, event_type, schema_version, payload, \
               metadata, source_position, ord) \
     ORDER BY ord";

/// One row per stream of a batch: its last version and how many events it had. A stream
/// advances only from the version before the batch's first event of it, so a row not
/// written means an event out of order.
fn upsert_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (stream_id, version, n) \
         SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[]) \
         ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, \
             n = {table}.n + EXCLUDED.n \
         WHERE {table}.version + EXCLUDED.n = EXCLUDED.version"
    )
}

/// Upserts one row per stream of `events` (in order, consecutive versions per stream).
async fn upsert_counters(
    conn: &mut PgConnection,
    sql: &str,
    events: &[&ForeignEvent],
) -> Result<(), HandleError> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let (mut streams, mut versions, mut counts): (Vec<&str>, Vec<i64>, Vec<i64>) =
        Default::default();
    for event in events {
        match index.get(event.stream_id.as_str()) {
            Some(&i) => {
                if event.stream_version != versions[i] + 1 {
                    return Err(HandleError::Poison(format!(
                        "{} version {} follows {} in the batch",
                        event.stream_id, event.stream_version, versions[i]
                    )));
                }
                versions[i] = event.stream_version;
                counts[i] += 1;
            }
            None => {
                index.insert(&event.stream_id, streams.len());
                streams.push(&event.stream_id);
                versions.push(event.stream_version);
                counts.push(1);
            }
        }
    }
    let written = sqlx::query(sql)
        .bind(&streams)
        .bind(&versions)
        .bind(&counts)
        .execute(&mut *conn)
        .await
        .map_err(|e| HandleError::database(e, "upserting counters"))?
        .rows_affected();
    if written != streams.len() as u64 {
        return Err(HandleError::Poison(format!(
            "{} of {} counters did not follow their stream's recorded version",
            streams.len() as u64 - written,
            streams.len()
        )));
    }
    Ok(())
}

/// What the reaction saw: each `handle_batch` call (its size, start and end) and the
/// single-event calls (the consumer's fallback after a failed batch).
#[derive(Default)]
struct Calls {
    batches: Vec<(usize, Instant, Instant)>,
    singles: u64,
}

/// The test reaction: a set-based counter per stream.
struct Counters {
    sql: String,
    calls: Mutex<Calls>,
}

impl Reaction for Counters {
    fn name(&self) -> &str {
        "bench-counters"
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ForeignEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            self.calls.lock().unwrap().singles += 1;
            upsert_counters(tx, &self.sql, &[event]).await
        })
    }

    fn handle_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a ForeignEvent],
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let start = Instant::now();
            let result = upsert_counters(tx, &self.sql, events).await;
            let end = Instant::now();
            self.calls
                .lock()
                .unwrap()
                .batches
                .push((events.len(), start, end));
            result
        })
    }
}

/// The published events, in publish order: `streams` product streams, each with consecutive
/// versions, interleaved at random.
fn events(messages: usize, streams: usize) -> Vec<RecordedEvent> {
    let mut rng = StdRng::seed_from_u64(42);
    let products: Vec<Uuid> = (0..streams).map(|_| Uuid::new_v4()).collect();
    let mut left: Vec<(usize, i64)> = (0..streams)
        .map(|s| {
            (
                s,
                (messages / streams + usize::from(s < messages % streams)) as i64,
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let mut version = vec![0i64; streams];
    let mut price = vec![1_000i64; streams];
    let mut out = Vec::with_capacity(messages);
    while !left.is_empty() {
        let k = rng.random_range(0..left.len());
        let s = left[k].0;
        left[k].1 -= 1;
        if left[k].1 == 0 {
            left.swap_remove(k);
        }
        version[s] += 1;
        let old = price[s];
        price[s] = 500 + rng.random_range(0..10_000);
        let i = out.len() as i64;
        out.push(RecordedEvent {
            // One producer transaction per event: (xid << 20) + ordinal.
            position: ((1_000 + i) << 20) + 1,
            stream_id: format!("product-{}", products[s]),
            stream_version: version[s],
            event_id: Uuid::now_v7(),
            event_type: "PriceChanged".to_owned(),
            schema_version: 1,
            payload: json!({
                "product_id": products[s], "old_price_cents": old, "price_cents": price[s],
            }),
            metadata: Metadata {
                correlation_id: Some(format!("req-{}", Uuid::new_v4().simple())),
                causation_id: Some(Uuid::new_v4().to_string()),
                traceparent: Some(format!(
                    "00-{}-{}-01",
                    Uuid::new_v4().simple(),
                    &Uuid::new_v4().simple().to_string()[..16]
                )),
            },
            recorded_at: chrono::Utc::now(),
        });
    }
    out
}

/// What the consumer decodes from each message.
fn foreign(event: &RecordedEvent) -> ForeignEvent {
    ForeignEvent {
        event_id: event.event_id,
        event_type: event.event_type.clone(),
        stream_id: event.stream_id.clone(),
        stream_version: event.stream_version,
        source_position: event.position,
        schema_version: event.schema_version,
        payload: event.payload.clone(),
        metadata: event.metadata.clone(),
    }
}

/// Publishes as the relay does (pipelined, then every ack awaited), in windows of its batch
/// size; returns how many JetStream dropped as duplicates.
async fn publish(js: &jetstream::Context, prefix: &str, events: &[RecordedEvent]) -> usize {
    let mut duplicates = 0;
    for window in events.chunks(500) {
        let mut acks = Vec::with_capacity(window.len());
        for event in window {
            let (headers, payload) = envelope::encode(event).expect("encoding an event");
            let message = PublishMessage::build()
                .payload(payload)
                .headers(headers)
                .message_id(event.event_id.to_string());
            let subject = format!("{prefix}.{}.{}", event.stream_id, event.event_type);
            acks.push(js.send_publish(subject, message).await.expect("publishing"));
        }
        for ack in acks {
            duplicates += usize::from(ack.await.expect("publish ack").duplicate);
        }
    }
    duplicates
}

/// Deletes the bench's stream at the end, also after a panic (on a thread and runtime of its
/// own, as the tests' fixture does).
struct StreamGuard(String);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let stream = self.0.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let client = connect_nats().await;
                match jetstream::new(client).delete_stream(&stream).await {
                    Ok(_) => println!("deleted JetStream stream {stream}"),
                    Err(e) => eprintln!("cannot delete JetStream stream {stream}: {e}"),
                }
            });
        })
        .join();
    }
}

/// Waits until `durable` has nothing pending or unacknowledged.
async fn drained(stream: &jetstream::stream::Stream, durable: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = stream.consumer_info(durable).await;
        let info = info.expect("consumer info");
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{durable}: {} pending, {} unacknowledged after 30 s",
            info.num_pending,
            info.num_ack_pending
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Seconds for a durable pull consumer of its own to pull and ack every message.
async fn raw_pull(
    stream: &jetstream::stream::Stream,
    prefix: &str,
    durable: &str,
    n: usize,
) -> Duration {
    let start = Instant::now();
    let consumer = stream
        .get_or_create_consumer(
            durable,
            pull::Config {
                durable_name: Some(durable.to_owned()),
                filter_subject: format!("{prefix}.>"),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_deliver: MAX_DELIVER,
                max_ack_pending: MAX_ACK_PENDING,
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await
        .expect("creating the raw pull consumer");
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .heartbeat(IDLE_HEARTBEAT)
        .expires(PULL_EXPIRES)
        .messages()
        .await
        .expect("pulling");
    let mut pulled = 0;
    while pulled < n {
        let message = messages
            .next()
            .await
            .expect("the message stream ended")
            .expect("pulling a message");
        message.ack().await.expect("acking");
        pulled += 1;
    }
    let elapsed = start.elapsed();
    drop(messages);
    drained(stream, durable).await;
    elapsed
}

/// The inbox rows of `batch`, in one statement (`inbox::insert`'s binds).
async fn insert_rows(
    conn: &mut PgConnection,
    sql: &str,
    batch: &[ForeignEvent],
) -> Result<(), sqlx::Error> {
    let metadata: Vec<serde_json::Value> = batch
        .iter()
        .map(|e| serde_json::to_value(&e.metadata).expect("metadata"))
        .collect();
    sqlx::query(sql)
        .bind(batch.iter().map(|e| e.event_id).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|e| e.stream_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|e| e.stream_version).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|e| e.schema_version).collect::<Vec<_>>())
        .bind(batch.iter().map(|e| &e.payload).collect::<Vec<_>>())
        .bind(metadata)
        .bind(batch.iter().map(|e| e.source_position).collect::<Vec<_>>())
        .execute(conn)
        .await
        .map(|_| ())
}

/// Seconds to insert the rows in `MAX_BATCH`-row statements, one transaction per batch, and
/// the mean time of its COMMITs (the WAL flush, which pg_stat_statements does not show).
async fn raw_insert(pool: &PgPool, events: &[ForeignEvent]) -> (Duration, Duration) {
    let upsert = upsert_sql("raw_counters");
    let mut conn = pool.acquire().await.expect("a connection");
    let mut commits = Duration::ZERO;
    let start = Instant::now();
    for batch in events.chunks(MAX_BATCH) {
        let mut tx = conn.begin().await.expect("begin");
        insert_rows(&mut tx, RAW_INBOX_INSERT, batch)
            .await
            .expect("raw insert");
        let refs: Vec<&ForeignEvent> = batch.iter().collect();
        upsert_counters(&mut tx, &upsert, &refs)
            .await
            .expect("raw upsert");
        let committing = Instant::now();
        tx.commit().await.expect("commit");
        commits += committing.elapsed();
    }
    let batches = events.len().div_ceil(MAX_BATCH) as u32;
    (start.elapsed(), commits / batches.max(1))
}

/// The steps of the consumer's batch transaction (`batch::record`), in its order.
const STEPS: [&str; 9] = [
    "acquire", "BEGIN", "locks", "shared", "known", "versions", "upsert", "INSERT", "COMMIT",
];

/// The consumer's batch transactions replayed without NATS: the same batches (sizes, order),
/// the same statements (`inbox.rs`'s, on `step_inbox`) in `batch::record`'s order, a pooled
/// connection taken per batch; total seconds, and the total time of each step.
async fn replay_steps(
    pool: &PgPool,
    events: &[ForeignEvent],
    sizes: &[usize],
) -> (Duration, [Duration; 9]) {
    let upsert = upsert_sql("step_counters");
    let insert = RAW_INBOX_INSERT.replace("raw_inbox", "step_inbox");
    let mut steps = [Duration::ZERO; 9];
    let start = Instant::now();
    let mut at = 0;
    for &size in sizes {
        let batch = &events[at..(at + size).min(events.len())];
        at += size;
        let mut mark = Instant::now();
        let mut lap = |step: usize| {
            let now = Instant::now();
            steps[step] += now - mark;
            mark = now;
        };
        let mut conn = pool.acquire().await.expect("a connection");
        lap(0);
        let mut tx = conn.begin().await.expect("begin");
        lap(1);
        let mut streams: Vec<&str> = batch.iter().map(|e| e.stream_id.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        sqlx::query(
            "SELECT pg_advisory_xact_lock($1, k) FROM (SELECT DISTINCT hashtext(s) AS k \
             FROM unnest($2::text[]) AS s ORDER BY k) AS keys",
        )
        .bind(0x7374_6570) // "step", apart from the consumer's lock class
        .bind(&streams)
        .execute(&mut *tx)
        .await
        .expect("stream locks");
        lap(2);
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
            .bind(0x7374_6570)
            .bind(0)
            .execute(&mut *tx)
            .await
            .expect("shared lock");
        lap(3);
        let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
        let known: Vec<Uuid> =
            sqlx::query_scalar("SELECT event_id FROM step_inbox WHERE event_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await
                .expect("known ids");
        assert!(known.is_empty());
        lap(4);
        let _: Vec<(String, i64)> = sqlx::query_as(
            "SELECT s.stream_id, v.stream_version FROM unnest($1::text[]) AS s(stream_id) \
             CROSS JOIN LATERAL (SELECT stream_version FROM step_inbox i \
                                 WHERE i.stream_id = s.stream_id \
                                 ORDER BY stream_version DESC LIMIT 1) AS v",
        )
        .bind(&streams)
        .fetch_all(&mut *tx)
        .await
        .expect("recorded versions");
        lap(5);
        let refs: Vec<&ForeignEvent> = batch.iter().collect();
        upsert_counters(&mut tx, &upsert, &refs)
            .await
            .expect("step upsert");
        lap(6);
        insert_rows(&mut tx, &insert, batch)
            .await
            .expect("step insert");
        lap(7);
        tx.commit().await.expect("commit");
        lap(8);
    }
    (start.elapsed(), steps)
}

/// The mean time of a trivial query's round trip on one connection: what each of a
/// transaction's statements costs before any work, on this machine at this moment.
async fn round_trip(pool: &PgPool) -> Duration {
    let mut conn = pool.acquire().await.expect("a connection");
    let start = Instant::now();
    for _ in 0..200 {
        sqlx::query("SELECT 1")
            .execute(&mut *conn)
            .await
            .expect("SELECT 1");
    }
    start.elapsed() / 200
}

async fn recorded(pool: &PgPool, probe: Probe) -> i64 {
    sqlx::query_scalar(probe.sql())
        .fetch_one(pool)
        .await
        .expect("counting what is recorded")
}

/// Seconds from starting the consumer until the inbox holds all `n` events, and what its
/// reaction saw; checks the outcome.
async fn consumer(
    db: &TestDb,
    js: &jetstream::Context,
    mut config: ConsumerConfig,
    durable: &str,
    events: &[ForeignEvent],
    args: &Args,
) -> (Duration, Calls) {
    let timeout = Duration::from_secs(args.timeout);
    config.durable = durable.to_owned();
    let reaction = Arc::new(Counters {
        sql: upsert_sql("counters"),
        calls: Mutex::default(),
    });
    let consumer = Consumer::new(
        db.store(),
        js.clone(),
        config.clone(),
        vec![reaction.clone()],
    );
    let dead_letters = consumer.dead_letter_counter();
    let shutdown = CancellationToken::new();
    let n = events.len() as i64;
    let start = Instant::now();
    let task = if args.unconstrained {
        tokio::spawn(tokio::task::unconstrained(consumer.run(shutdown.clone())))
    } else {
        tokio::spawn(consumer.run(shutdown.clone()))
    };
    let mut poll = tokio::time::interval(Duration::from_millis(10));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        poll.tick().await;
        let count = recorded(&db.pool, args.probe).await;
        if count >= n {
            break;
        }
        assert!(
            start.elapsed() < timeout,
            "the consumer recorded only {count} of {n} events in {timeout:?}"
        );
    }
    let elapsed = start.elapsed();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the consumer stops on shutdown")
        .expect("the consumer task");
    let stream = js.get_stream(&config.stream).await.expect("the stream");
    drained(&stream, durable).await;
    check(&db.pool, events).await;
    assert_eq!(dead_letters.load(Ordering::SeqCst), 0, "dead letters");
    let calls = std::mem::take(&mut *reaction.calls.lock().unwrap());
    (elapsed, calls)
}

/// Every event once in the inbox, in per-stream order; every counter at its stream's last
/// version with one count per event; no dead letters.
async fn check(pool: &PgPool, events: &[ForeignEvent]) {
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let (rows, distinct, published): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT event_id), count(*) FILTER (WHERE event_id = ANY($1)) \
         FROM inbox",
    )
    .bind(&ids)
    .fetch_one(pool)
    .await
    .expect("checking the inbox");
    let n = events.len() as i64;
    assert_eq!(
        (rows, distinct, published),
        (n, n, n),
        "the inbox holds every event once"
    );
    let out_of_order: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT stream_version, \
             lag(stream_version) OVER (PARTITION BY stream_id ORDER BY seq) AS previous \
         FROM inbox) AS t WHERE stream_version <> coalesce(previous, 0) + 1",
    )
    .fetch_one(pool)
    .await
    .expect("checking the order");
    assert_eq!(out_of_order, 0, "inbox rows out of their stream's order");
    let mut expected: HashMap<&str, (i64, i64)> = HashMap::new();
    for e in events {
        let entry = expected.entry(&e.stream_id).or_default();
        *entry = (entry.0.max(e.stream_version), entry.1 + 1);
    }
    let counters: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT stream_id, version, n FROM counters")
            .fetch_all(pool)
            .await
            .expect("reading the counters");
    assert_eq!(counters.len(), expected.len(), "one counter per stream");
    for (stream, version, count) in &counters {
        assert_eq!(
            expected.get(stream.as_str()),
            Some(&(*version, *count)),
            "counter of {stream}"
        );
    }
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(pool)
        .await
        .expect("counting dead letters");
    assert_eq!(dead, 0, "dead letters");
}

/// How long each of the consumer's batch transactions took (`batch::record`, from taking a
/// connection to the commit, retries included): its `batch` span (debug level), timed from
/// creation to close; and each statement inside one, as its client saw it (sqlx's own
/// `sqlx::query` debug event: from sending to the end of its result).
mod spans {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::Instant;

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id};
    use tracing::{Event, Subscriber};
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    /// (opened, closed) of every `batch` span closed since the last `take`.
    static BATCHES: Mutex<Vec<(Instant, Instant)>> = Mutex::new(Vec::new());
    /// Statements run inside a `batch` span since the last `take_statements`: by their first
    /// words, how many and their total seconds.
    static STATEMENTS: Mutex<BTreeMap<String, (u64, f64)>> = Mutex::new(BTreeMap::new());

    #[derive(Default)]
    struct Query {
        summary: String,
        seconds: f64,
    }

    impl Visit for Query {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "summary" {
                value.clone_into(&mut self.summary);
            }
        }

        fn record_f64(&mut self, field: &Field, value: f64) {
            if field.name() == "elapsed_secs" {
                self.seconds = value;
            }
        }

        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }

    struct Opened(Instant);

    struct BatchTimer;

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for BatchTimer {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            if attrs.metadata().name() == "batch" {
                if let Some(span) = ctx.span(id) {
                    span.extensions_mut().insert(Opened(Instant::now()));
                }
            }
        }

        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            if event.metadata().target() != "sqlx::query" {
                return;
            }
            let in_batch = ctx
                .event_scope(event)
                .is_some_and(|mut scope| scope.any(|span| span.name() == "batch"));
            if in_batch {
                let mut query = Query::default();
                event.record(&mut query);
                let summary = query.summary.trim_end_matches(" …").to_owned();
                let mut statements = STATEMENTS.lock().unwrap();
                let entry = statements.entry(summary).or_default();
                *entry = (entry.0 + 1, entry.1 + query.seconds);
            }
        }

        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            let closed = Instant::now();
            if let Some(span) = ctx.span(&id) {
                if let Some(Opened(opened)) = span.extensions().get::<Opened>() {
                    BATCHES.lock().unwrap().push((*opened, closed));
                }
            }
        }
    }

    /// The batch timer, and the usual log output when `RUST_LOG` is set
    /// (`RUST_LOG=event_store=debug`).
    pub fn init() {
        let timer = BatchTimer.with_filter(
            Targets::new()
                .with_target("event_store::consumer", tracing::Level::DEBUG)
                .with_target("sqlx::query", tracing::Level::DEBUG),
        );
        let log = std::env::var_os("RUST_LOG").map(|_| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(EnvFilter::from_default_env())
        });
        tracing_subscriber::registry().with(timer).with(log).init();
    }

    pub fn take() -> Vec<(Instant, Instant)> {
        std::mem::take(&mut *BATCHES.lock().unwrap())
    }

    pub fn take_statements() -> BTreeMap<String, (u64, f64)> {
        std::mem::take(&mut *STATEMENTS.lock().unwrap())
    }
}

/// Microseconds `envelope::decode` takes per message, on the messages as published.
fn decode_cost(events: &[RecordedEvent]) -> (f64, usize) {
    let messages: Vec<async_nats::Message> = events
        .iter()
        .map(|e| {
            let (mut headers, payload) = envelope::encode(e).expect("encoding");
            headers.insert("Nats-Msg-Id", e.event_id.to_string().as_str());
            async_nats::Message {
                subject: format!("x.{}.{}", e.stream_id, e.event_type).into(),
                reply: None,
                length: payload.len(),
                payload,
                headers: Some(headers),
                status: None,
                description: None,
            }
        })
        .collect();
    let start = Instant::now();
    let decoded = messages
        .iter()
        .filter(|m| envelope::decode(m).is_ok())
        .count();
    let micros = start.elapsed().as_secs_f64() * 1e6 / messages.len() as f64;
    (micros, decoded)
}

/// The wire size of a message as the relay publishes it: headers block, payload, subject.
fn wire_size(event: &RecordedEvent, prefix: &str) -> (usize, usize, usize) {
    let (headers, payload) = envelope::encode(event).expect("encoding");
    let mut size = "NATS/1.0\r\n".len() + "\r\n".len();
    for (name, values) in headers.iter() {
        for value in values {
            size += name.to_string().len() + 2 + value.as_str().len() + 2;
        }
    }
    size += "Nats-Msg-Id: ".len() + 36 + 2;
    let subject = format!("{prefix}.{}.{}", event.stream_id, event.event_type);
    (size, payload.len(), subject.len())
}

/// Where the CPU went, from `/proc`: this process, the Postgres backends of the run's
/// database, the rest of Postgres, every nats-server, and the rest of the machine.
mod cpu {
    use std::collections::BTreeMap;
    use std::time::Instant;

    pub const GROUPS: [&str; 4] = ["bench", "pg (this db)", "pg (rest)", "nats-server"];

    pub struct Snapshot {
        at: Instant,
        /// busy (user, nice, system, irq, softirq), iowait, steal.
        machine: [u64; 3],
        processes: BTreeMap<u32, (usize, u64)>,
    }

    pub struct Usage {
        pub busy: f64,
        pub iowait: f64,
        pub steal: f64,
        pub groups: [f64; 4],
        pub other: f64,
    }

    pub fn snapshot(database: &str) -> Snapshot {
        let me = std::process::id();
        let mut processes = BTreeMap::new();
        let pids = std::fs::read_dir("/proc").into_iter().flatten().flatten();
        for pid in pids.filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
            let Some((comm, ticks)) = process(pid) else {
                continue;
            };
            let group = match comm.as_str() {
                _ if pid == me => 0,
                "postgres" if serves(pid, database) => 1,
                "postgres" => 2,
                "nats-server" => 3,
                _ => continue,
            };
            processes.insert(pid, (group, ticks));
        }
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let v: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .unwrap_or_default()
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        Snapshot {
            at: Instant::now(),
            machine: [at(0) + at(1) + at(2) + at(5) + at(6), at(4), at(7)],
            processes,
        }
    }

    /// Cores used on average between two snapshots (1.0 = one core busy); a process born in
    /// between counts all its ticks, one that ended in between shows as other.
    pub fn between(before: &Snapshot, after: &Snapshot) -> Usage {
        let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let cores = |ticks: u64| ticks as f64 / 100.0 / secs;
        let mut groups = [0.0; 4];
        for (pid, (group, now)) in &after.processes {
            let was = before.processes.get(pid).map_or(0, |(_, t)| *t);
            groups[*group] += cores(now.saturating_sub(was));
        }
        let machine = |i: usize| cores(after.machine[i].saturating_sub(before.machine[i]));
        let busy = machine(0);
        Usage {
            busy,
            iowait: machine(1),
            steal: machine(2),
            other: (busy - groups.iter().sum::<f64>()).max(0.0),
            groups,
        }
    }

    /// A backend's command line reads `postgres: <cluster>: <user> <database> <client> ...`.
    fn serves(pid: u32, database: &str) -> bool {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .split_whitespace()
                    .any(|w| w == database)
            })
            .unwrap_or(false)
    }

    /// Name and user + system ticks (fields 14 and 15) of a process.
    fn process(pid: u32) -> Option<(String, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (open, close) = (stat.find('(')?, stat.rfind(')')?);
        let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some((stat.get(open + 1..close)?.to_owned(), utime + stime))
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// Resets pg_stat_statements for `database` only (others on the server keep theirs).
async fn reset_statements(admin: &mut PgConnection, database: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = $1), 0)",
    )
    .bind(database)
    .execute(admin)
    .await
    .map(|_| ())
}

/// The top statements of `database` since its reset, as lines to print under `title`.
async fn statements(
    admin: &mut PgConnection,
    database: &str,
    title: &str,
) -> Result<String, sqlx::Error> {
    let rows: Vec<(i64, f64, f64, i64, String)> = sqlx::query_as(
        "SELECT calls, total_exec_time, mean_exec_time, rows, query FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) \
         ORDER BY total_exec_time DESC LIMIT 15",
    )
    .bind(database)
    .fetch_all(admin)
    .await?;
    let total: f64 = rows.iter().map(|r| r.1).sum();
    let mut out = format!(
        "  top statements during {title} (pg_stat_statements; COMMIT's WAL flush not included):\n  \
         {:>7} {:>9} {:>8} {:>7}  query\n",
        "calls", "total ms", "mean ms", "rows"
    );
    for (calls, total, mean, rows, query) in rows {
        let query: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
        let query: String = query.chars().take(110).collect();
        out += &format!("  {calls:>7} {total:>9.1} {mean:>8.3} {rows:>7}  {query}\n");
    }
    out += &format!("  (sum of these: {total:.0} ms)");
    Ok(out)
}

/// Resets the statistics of `database` (when `--statements`), runs `measure`, and returns its
/// outcome with the statements it ran.
async fn with_statements<T>(
    admin: &mut Option<PgConnection>,
    database: &str,
    title: &str,
    measure: impl std::future::Future<Output = T>,
) -> (T, Option<String>) {
    let Some(conn) = admin.as_mut() else {
        return (measure.await, None);
    };
    if let Err(e) = reset_statements(conn, database).await {
        return (
            measure.await,
            Some(format!("  pg_stat_statements unavailable: {e}")),
        );
    }
    let outcome = measure.await;
    let text = statements(conn, database, title)
        .await
        .unwrap_or_else(|e| format!("  pg_stat_statements unavailable: {e}"));
    (outcome, Some(text))
}

/// One measurement of one run.
struct Row {
    run: usize,
    name: &'static str,
    seconds: f64,
    cpu: cpu::Usage,
}

const PULL: &str = "raw JetStream pull + ack";
const INSERT: &str = "raw batched INSERT + upsert";
const CONSUMER: &str = "consumer (Consumer::run)";

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn print_tables(rows: &[Row], n: usize, runs: usize) {
    let rate = |name: &str, run: usize| {
        rows.iter()
            .find(|r| r.name == name && r.run == run)
            .map(|r| n as f64 / r.seconds)
            .unwrap_or(f64::NAN)
    };
    println!();
    println!(
        "{:<4} {:<29} {:>8} {:>8} {:>9} {:>8} {:>9}",
        "run", "measurement", "messages", "seconds", "rate/s", "vs pull", "vs insert"
    );
    for r in rows {
        let own = n as f64 / r.seconds;
        let ratios = if r.name == CONSUMER {
            format!(
                "{:>8.2} {:>9.2}",
                own / rate(PULL, r.run),
                own / rate(INSERT, r.run)
            )
        } else {
            format!("{:>8} {:>9}", "", "")
        };
        println!(
            "{:<4} {:<29} {n:>8} {:>8.3} {own:>9.0} {ratios}",
            r.run, r.name, r.seconds
        );
    }
    if runs > 1 {
        let medians: Vec<(&str, f64)> = [PULL, INSERT, CONSUMER]
            .into_iter()
            .map(|name| {
                (
                    name,
                    median((1..=runs).map(|run| rate(name, run)).collect()),
                )
            })
            .collect();
        for (name, m) in &medians {
            let ratios = if *name == CONSUMER {
                format!("{:>8.2} {:>9.2}", m / medians[0].1, m / medians[1].1)
            } else {
                format!("{:>8} {:>9}", "", "")
            };
            println!("{:<4} {name:<29} {n:>8} {:>8} {m:>9.0} {ratios}", "med", "");
        }
    }
    println!();
    println!(
        "{:<4} {:<29} {:>7} {:>6} {:>6} {:>6} {:>8} {:>6} {:>6} {:>6}   (cores used, of {})",
        "run",
        "cpu during",
        "machine",
        "iowait",
        "steal",
        cpu::GROUPS[0],
        "pg(ours)",
        "pg(rest)",
        "nats",
        "other",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    for r in rows {
        let c = &r.cpu;
        println!(
            "{:<4} {:<29} {:>7.2} {:>6.2} {:>6.2} {:>6.2} {:>8.2} {:>6.2} {:>6.2} {:>6.2}",
            r.run,
            r.name,
            c.busy,
            c.iowait,
            c.steal,
            c.groups[0],
            c.groups[1],
            c.groups[2],
            c.groups[3],
            c.other
        );
    }
}

/// The consumer's batches: their sizes, as handed to the reaction, and where each batch's
/// wall time went: before the reaction (taking a connection, BEGIN, stream locks, the
/// duplicate and version look-ups), in it (the upsert), after it (the inbox insert and the
/// commit), and outside the transaction (waiting for messages, decoding, acks).
fn print_batches(calls: &Calls, spans: &[(Instant, Instant)], seconds: f64) {
    let mut sizes: Vec<usize> = calls.batches.iter().map(|b| b.0).collect();
    if sizes.is_empty() {
        return;
    }
    sizes.sort_unstable();
    let total: usize = sizes.iter().sum();
    let inside: f64 = calls
        .batches
        .iter()
        .map(|(_, s, e)| e.duration_since(*s).as_secs_f64())
        .sum();
    let count = sizes.len();
    let mut buckets: BTreeMap<&str, usize> = BTreeMap::new();
    for &s in &sizes {
        let bucket = match s {
            1 => "a:1",
            2..=15 => "b:2-15",
            16..=63 => "c:16-63",
            64..=191 => "d:64-191",
            192..=255 => "e:192-255",
            _ => "f:256",
        };
        *buckets.entry(bucket).or_default() += 1;
    }
    let buckets: Vec<String> = buckets
        .iter()
        .map(|(k, v)| format!("{} x{v}", &k[2..]))
        .collect();
    println!(
        "  consumer batches (as handed to handle_batch): {count}, {total} events; size min {} / \
         median {} / mean {:.0} / max {}; by size: {}; single-event fallbacks {}",
        sizes[0],
        sizes[count / 2],
        total as f64 / count as f64,
        sizes[count - 1],
        buckets.join(", "),
        calls.singles
    );
    let first: Vec<String> = calls
        .batches
        .iter()
        .take(24)
        .map(|b| b.0.to_string())
        .collect();
    println!("  first batches in order: {}", first.join(" "));
    let wall = seconds * 1e3 / count as f64;
    let in_tx: f64 = spans
        .iter()
        .map(|(o, c)| c.duration_since(*o).as_secs_f64())
        .sum();
    // Each handler call inside the transaction span that contains it.
    let (mut before, mut after, mut matched) = (0.0, 0.0, 0usize);
    let mut sorted: Vec<&(Instant, Instant)> = spans.iter().collect();
    sorted.sort_by_key(|s| s.0);
    let mut i = 0;
    for (_, start, end) in &calls.batches {
        while i < sorted.len() && sorted[i].1 < *start {
            i += 1;
        }
        if let Some((opened, closed)) = sorted.get(i) {
            if opened <= start && end <= closed {
                before += start.duration_since(*opened).as_secs_f64();
                after += closed.duration_since(*end).as_secs_f64();
                matched += 1;
            }
        }
    }
    let per = |total: f64, of: usize| total * 1e3 / of.max(1) as f64;
    println!(
        "  per batch ({} transactions timed, {matched} matched to their handler call): {wall:.2} ms \
         wall = {:.2} ms in the transaction [before the reaction {:.2} (connection, BEGIN, locks, \
         look-ups), reaction {:.2}, after it {:.2} (inbox INSERT, COMMIT)] + {:.2} ms outside it \
         (waiting for messages, decoding, acks)",
        spans.len(),
        per(in_tx, spans.len()),
        per(before, matched),
        per(inside, count),
        per(after, matched),
        wall - per(in_tx, spans.len()).min(wall),
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    spans::init();
    let n = args.messages;
    assert!(
        n > 0 && args.streams > 0,
        "--messages and --streams must be positive"
    );
    println!(
        "consumer bench: {n} messages over {} streams, MAX_BATCH {MAX_BATCH}, {} run(s), probe {}{}; \
         load average {} at start",
        args.streams.min(n),
        args.repeat,
        args.probe.sql(),
        if args.unconstrained {
            ", consumer task unconstrained (diagnostic)"
        } else {
            ""
        },
        loadavg()
    );

    let client = connect_nats().await;
    let js = jetstream::new(client.clone());
    let ns = unique("bench_cons");
    let config = ConsumerConfig {
        stream: format!("{ns}_events"),
        subject_prefix: format!("{ns}.events"),
        durable: String::new(),
        dead_letter_subject: format!("{ns}.deadletter"),
        max_deliver: MAX_DELIVER,
    };
    let stream = event_store::nats::ensure_stream(&js, &config.stream, &config.subject_prefix)
        .await
        .expect("creating the stream");
    let _guard = StreamGuard(config.stream.clone());

    let recorded = events(n, args.streams);
    let published = Instant::now();
    let duplicates = publish(&js, &config.subject_prefix, &recorded).await;
    let held = stream
        .clone()
        .info()
        .await
        .expect("stream info")
        .state
        .messages;
    assert_eq!(
        (duplicates, held),
        (0, n as u64),
        "every message published once"
    );
    println!(
        "published {n} messages to {} in {:.2} s (acks awaited; not timed below)",
        config.stream,
        published.elapsed().as_secs_f64()
    );
    let (headers, payload, subject) = wire_size(&recorded[0], &config.subject_prefix);
    let (decode_us, decoded) = decode_cost(&recorded);
    assert_eq!(decoded, n, "every message decodes");
    println!(
        "a message: headers {headers} B, payload {payload} B, subject {subject} B; \
         envelope::decode: {decode_us:.1} us per message"
    );
    let events: Vec<ForeignEvent> = recorded.iter().map(foreign).collect();
    drop(recorded);

    let mut rows = Vec::new();
    let mut admin = if args.statements {
        Some(
            PgConnection::connect(&admin_database_url())
                .await
                .expect("connecting to the admin database"),
        )
    } else {
        None
    };
    for run in 1..=args.repeat {
        let db = TestDb::new().await;
        sqlx::raw_sql(TABLES)
            .execute(&db.pool)
            .await
            .expect("bench tables");

        let before = cpu::snapshot(&db.name);
        let pull = raw_pull(
            &stream,
            &config.subject_prefix,
            &format!("raw-pull-{run}"),
            n,
        )
        .await;
        rows.push(Row {
            run,
            name: PULL,
            seconds: pull.as_secs_f64(),
            cpu: cpu::between(&before, &cpu::snapshot(&db.name)),
        });

        let before = cpu::snapshot(&db.name);
        let ((insert, commit), insert_statements) = with_statements(
            &mut admin,
            &db.name,
            "the raw batched INSERT",
            raw_insert(&db.pool, &events),
        )
        .await;
        rows.push(Row {
            run,
            name: INSERT,
            seconds: insert.as_secs_f64(),
            cpu: cpu::between(&before, &cpu::snapshot(&db.name)),
        });

        let rtt = round_trip(&db.pool).await;
        let before = cpu::snapshot(&db.name);
        spans::take();
        spans::take_statements();
        let durable = format!("bench-consumer-{run}");
        let ((seconds, calls), consumer_statements) = with_statements(
            &mut admin,
            &db.name,
            "the consumer (with its probe and checks)",
            consumer(&db, &js, config.clone(), &durable, &events, &args),
        )
        .await;
        let usage = cpu::between(&before, &cpu::snapshot(&db.name));
        let batch_spans = spans::take();
        let batch_statements = spans::take_statements();
        println!(
            "run {run}: pull {:.0}/s, insert {:.0}/s, consumer {:.0}/s; checked: every event once \
             in the inbox in stream order, {} counters at their last version, no dead letters; \
             load average {}",
            n as f64 / pull.as_secs_f64(),
            n as f64 / insert.as_secs_f64(),
            n as f64 / seconds.as_secs_f64(),
            args.streams.min(n),
            loadavg()
        );
        println!(
            "  round trip of SELECT 1 just before: {:.3} ms; COMMIT of a raw {MAX_BATCH}-row \
             batch: {:.2} ms",
            rtt.as_secs_f64() * 1e3,
            commit.as_secs_f64() * 1e3
        );
        print_batches(&calls, &batch_spans, seconds.as_secs_f64());
        let statement_ms: f64 = batch_statements.values().map(|(_, s)| s * 1e3).sum();
        let per: Vec<String> = batch_statements
            .iter()
            .map(|(summary, (count, secs))| {
                format!(
                    "{count} x {summary:?} {:.2}",
                    secs * 1e3 / batch_spans.len().max(1) as f64
                )
            })
            .collect();
        println!(
            "  statements in its transactions, as sqlx saw them (ms per transaction): {}; \
             together {:.2} of the {:.2} ms in the transaction",
            per.join(", "),
            statement_ms / batch_spans.len().max(1) as f64,
            batch_spans
                .iter()
                .map(|(o, c)| c.duration_since(*o).as_secs_f64() * 1e3)
                .sum::<f64>()
                / batch_spans.len().max(1) as f64
        );
        if args.steps {
            let sizes: Vec<usize> = calls.batches.iter().map(|b| b.0).collect();
            let (total, steps) = replay_steps(&db.pool, &events, &sizes).await;
            let per: Vec<String> = STEPS
                .iter()
                .zip(steps)
                .map(|(name, d)| {
                    format!("{name} {:.2}", d.as_secs_f64() * 1e3 / sizes.len() as f64)
                })
                .collect();
            println!(
                "  its {} transactions replayed without NATS: {:.0}/s, {:.2} ms per batch: {} \
                 (ms per batch)",
                sizes.len(),
                n as f64 / total.as_secs_f64(),
                total.as_secs_f64() * 1e3 / sizes.len() as f64,
                per.join(", ")
            );
        }
        for text in [insert_statements, consumer_statements]
            .into_iter()
            .flatten()
        {
            println!("{text}");
        }
        rows.push(Row {
            run,
            name: CONSUMER,
            seconds: seconds.as_secs_f64(),
            cpu: usage,
        });
        db.pool.close().await;
    }
    print_tables(&rows, n, args.repeat);
    println!();
    println!(
        "goal: consumer >= 10000 msg/s; load average {} at the end",
        loadavg()
    );
}
