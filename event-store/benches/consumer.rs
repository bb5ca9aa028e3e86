//! Consumer throughput beside its two raw ceilings, in one run against the same Postgres and
//! NATS, so the ratios mean something on a shared, noisy machine.
//!
//!     cargo bench -p event-store --bench consumer -- --messages 20000 --repeat 3
//!
//! N messages are published first, untimed, exactly as a relay publishes them, over S streams
//! with consecutive versions each, interleaved at random. Then, on a fresh database each run:
//!
//! - **raw pull**: a durable pull consumer of its own pulls and acks all N: what NATS allows;
//! - **raw insert**: the same inbox rows and counter upserts as the consumer's below,
//!   `MAX_BATCH` events per transaction on one connection: what Postgres allows for the work;
//! - **consumer**: `Consumer::run` with a reaction that upserts one counter row per stream and
//!   batch (set-based), timed until it has recorded all N, then checked: every event once in
//!   the inbox in per-stream order, every counter at its stream's last version, no dead letters.
//!
//! The consumer's end is seen by summing the counters every 10 ms: one row per stream, written
//! in the consumer's own transactions, so the sum reaches N when the inbox does. `SELECT
//! count(*) FROM inbox` would say the same but scans every row recorded so far on every poll:
//! it cost 13-20 % of a Postgres core, taken from the consumer being measured.
//!
//! Each run also prints the sizes of the batches the consumer handed to the reaction: how full
//! its transactions are.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, message::PublishMessage, stream::Stream};
use clap::Parser;
use event_store::consumer::{Consumer, ConsumerConfig, ForeignEvent, HandleError, Reaction};
use event_store::consumer::{ACK_WAIT, MAX_ACK_PENDING, MAX_BATCH, PULL_BATCH};
use event_store::nats::Declare;
use event_store::testing::{connect_nats, unique, TestDb};
use event_store::{envelope, EventStore, Metadata, RecordedEvent};
use futures::{future::BoxFuture, StreamExt};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Messages published and consumed per measurement.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Event streams the messages are spread over.
    #[arg(long, default_value_t = 1_000)]
    streams: usize,
    /// Runs of the whole set; with more than one, medians are printed too.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Copies of the stream (3 on a three-node cluster: `NATS_URL` names one of its nodes).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// cargo bench passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const TABLES: &str = "
CREATE TABLE counters (stream_id text PRIMARY KEY, version bigint NOT NULL, n bigint NOT NULL);
CREATE TABLE raw_counters (LIKE counters INCLUDING ALL);
CREATE TABLE raw_inbox (LIKE inbox INCLUDING ALL);";

/// The inbox's own multi-row insert (`inbox::insert`), into `raw_inbox`.
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
/// advances only from the version before the batch's first event of it, so a row not written
/// means an event out of order. (The raw insert writes `raw_counters` instead.)
const UPSERT: &str = "INSERT INTO counters (stream_id, version, n) \
     SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[]) \
     ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, \
         n = counters.n + EXCLUDED.n \
     WHERE counters.version + EXCLUDED.n = EXCLUDED.version";

/// Upserts one row per stream of `events` (in order, consecutive versions per stream).
async fn upsert_counters(
    conn: &mut PgConnection,
    sql: &str,
    events: &[&ForeignEvent],
) -> Result<(), HandleError> {
    // Each stream's last version and count, in the order the streams first appear.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let (mut streams, mut rows): (Vec<&str>, Vec<(i64, i64)>) = Default::default();
    for e in events {
        let i = *index.entry(&e.stream_id).or_insert_with(|| {
            streams.push(&e.stream_id);
            rows.push((e.stream_version - 1, 0));
            rows.len() - 1
        });
        let (version, count) = &mut rows[i];
        if e.stream_version != *version + 1 {
            return Err(HandleError::Poison(format!("{} out of order", e.stream_id)));
        }
        (*version, *count) = (e.stream_version, *count + 1);
    }
    let (versions, counts): (Vec<i64>, Vec<i64>) = rows.into_iter().unzip();
    let upsert = sqlx::query(sql).bind(&streams).bind(versions).bind(counts);
    let done = upsert.execute(conn).await;
    let done = done.map_err(|e| HandleError::database(e, "upserting counters"))?;
    if done.rows_affected() != streams.len() as u64 {
        return Err(HandleError::Poison("a counter out of order".to_owned()));
    }
    Ok(())
}

/// The reaction: the counters, set-based. It notes the size of each batch it is handed, one
/// per transaction.
struct Counters(Mutex<Vec<usize>>);

impl Reaction for Counters {
    fn name(&self) -> &str {
        "bench-counters"
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ForeignEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move { upsert_counters(tx, UPSERT, &[event]).await })
    }

    fn handle_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a ForeignEvent],
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        self.0.lock().unwrap().push(events.len());
        Box::pin(upsert_counters(tx, UPSERT, events))
    }
}

/// The published events, in publish order: `streams` product streams, each with consecutive
/// versions and a price that changes every time, interleaved at random.
fn events(messages: usize, streams: usize) -> Vec<RecordedEvent> {
    let mut rng = StdRng::seed_from_u64(42);
    let products: Vec<Uuid> = (0..streams).map(|_| Uuid::new_v4()).collect();
    let mut order: Vec<usize> = (0..messages).map(|i| i % streams).collect();
    order.shuffle(&mut rng);
    let (mut version, mut price) = (vec![0i64; streams], vec![1_000i64; streams]);
    let id = || Uuid::new_v4().simple().to_string();
    let event = |(i, s): (usize, usize)| {
        version[s] += 1;
        let old = std::mem::replace(&mut price[s], 500 + rng.random_range(0..10_000));
        RecordedEvent {
            // One producer transaction per event: (xid << 20) + ordinal.
            position: ((1_000 + i as i64) << 20) + 1,
            stream_id: format!("product-{}", products[s]),
            stream_version: version[s],
            event_id: Uuid::now_v7(),
            event_type: "PriceChanged".to_owned(),
            schema_version: 1,
            payload: json!({
                "product_id": products[s], "old_price_cents": old, "price_cents": price[s],
            }),
            metadata: Metadata {
                correlation_id: Some(format!("req-{}", id())),
                causation_id: Some(Uuid::new_v4().to_string()),
                traceparent: Some(format!("00-{}-{}-01", id(), &id()[..16])),
                idempotency_key: None,
            },
            recorded_at: chrono::Utc::now(),
        }
    };
    order.into_iter().enumerate().map(event).collect()
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
    // The services' default envelope: CloudEvents headers and, for one release, the old ones.
    let producer = envelope::Producer::new("bench");
    for window in events.chunks(500) {
        let mut acks = Vec::with_capacity(window.len());
        for event in window {
            let (headers, payload) =
                envelope::encode(&producer, event, None).expect("encoding an event");
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
        event_store::testing::delete_streams(
            &event_store::testing::nats_url(),
            vec![self.0.clone()],
        );
    }
}

/// Waits until `durable` has nothing pending or unacknowledged, for at most 30 s.
async fn drained(stream: &Stream, durable: &str) {
    for _ in 0..600 {
        let info = stream.consumer_info(durable).await.expect("consumer info");
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{durable} has messages pending or unacknowledged after 30 s");
}

/// Seconds for a durable pull consumer of its own to pull and ack `n` messages. The settings
/// that shape a pull under load match the consumer's (explicit ack, `ACK_WAIT`,
/// `MAX_ACK_PENDING`, `PULL_BATCH`); the rest, the client's defaults, matter only on
/// redelivery or when idle.
async fn raw_pull(stream: &Stream, prefix: &str, durable: &str, n: usize) -> Duration {
    let start = Instant::now();
    let config = pull::Config {
        durable_name: Some(durable.to_owned()),
        filter_subject: format!("{prefix}.>"),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    };
    let consumer = stream.get_or_create_consumer(durable, config).await;
    let consumer = consumer.expect("creating the raw pull consumer");
    let messages = consumer.stream().max_messages_per_batch(PULL_BATCH);
    let mut messages = messages.messages().await.expect("pulling");
    for _ in 0..n {
        let message = messages.next().await.expect("the message stream ended");
        message.expect("a message").ack().await.expect("acking");
    }
    let elapsed = start.elapsed();
    drop(messages);
    drained(stream, durable).await;
    elapsed
}

/// Seconds to insert the inbox rows (with `inbox::insert`'s binds) and upsert the counters,
/// `MAX_BATCH` events per transaction.
async fn raw_insert(pool: &PgPool, events: &[ForeignEvent]) -> Duration {
    let upsert = UPSERT.replace("counters", "raw_counters");
    let mut conn = pool.acquire().await.expect("a connection");
    let start = Instant::now();
    for batch in events.chunks(MAX_BATCH) {
        let mut tx = conn.begin().await.expect("begin");
        let text = |f: fn(&ForeignEvent) -> &str| batch.iter().map(f).collect::<Vec<_>>();
        sqlx::query(RAW_INBOX_INSERT)
            .bind(batch.iter().map(|e| e.event_id).collect::<Vec<_>>())
            .bind(text(|e| &e.stream_id))
            .bind(batch.iter().map(|e| e.stream_version).collect::<Vec<_>>())
            .bind(text(|e| &e.event_type))
            .bind(batch.iter().map(|e| e.schema_version).collect::<Vec<_>>())
            .bind(batch.iter().map(|e| &e.payload).collect::<Vec<_>>())
            .bind(batch.iter().map(|e| json!(e.metadata)).collect::<Vec<_>>())
            .bind(batch.iter().map(|e| e.source_position).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .expect("raw insert");
        let batch: Vec<&ForeignEvent> = batch.iter().collect();
        let upserted = upsert_counters(&mut tx, &upsert, &batch).await;
        upserted.expect("raw upsert");
        tx.commit().await.expect("commit");
    }
    start.elapsed()
}

/// Seconds from starting the consumer until its counters add up to all the events, and the
/// sizes of the batches its reaction was handed; then checks the outcome.
async fn consumer(
    pool: &PgPool,
    js: &jetstream::Context,
    config: ConsumerConfig,
    events: &[ForeignEvent],
) -> (Duration, Vec<usize>) {
    let stream = js.get_stream(&config.stream).await.expect("the stream");
    let durable = config.durable.clone();
    let reaction = Arc::new(Counters(Mutex::default()));
    let store = EventStore::new(pool.clone());
    let consumer = Consumer::new(store, js.clone(), config, vec![reaction.clone()]);
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(consumer.run(shutdown.clone()));
    let mut poll = tokio::time::interval(Duration::from_millis(10));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sum = || sqlx::query_scalar::<_, i64>("SELECT coalesce(sum(n), 0)::int8 FROM counters");
    while sum().fetch_one(pool).await.expect("the counters") < events.len() as i64 {
        assert!(start.elapsed().as_secs() < 300, "not done in 5 minutes");
        poll.tick().await;
    }
    let elapsed = start.elapsed();
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(matches!(stopped, Ok(Ok(()))), "the consumer stops");
    drained(&stream, &durable).await;
    check(pool, events).await;
    let dead_letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(pool)
        .await
        .expect("the dead letters");
    assert_eq!(dead_letters, 0, "dead letters");
    let batches = std::mem::take(&mut *reaction.0.lock().unwrap());
    (elapsed, batches)
}

/// What must be zero after the consumer, given the published events' ids, streams and versions
/// ($1, $2, $3).
const CHECK: &str = "SELECT
    (SELECT count(*) - count(DISTINCT event_id) FROM inbox),
    (SELECT count(*) FROM unnest($1::uuid[]) AS p(id)
        WHERE NOT EXISTS (SELECT FROM inbox WHERE event_id = p.id)),
    (SELECT count(*) FROM inbox) - cardinality($1::uuid[]),
    (SELECT count(*) FROM (SELECT stream_version,
            lag(stream_version) OVER (PARTITION BY stream_id ORDER BY seq) AS previous
        FROM inbox) AS t WHERE stream_version <> coalesce(previous, 0) + 1),
    (SELECT count(*) FROM counters c FULL JOIN
        (SELECT stream_id, max(version) AS version, count(*) AS n
         FROM unnest($2::text[], $3::int8[]) AS p(stream_id, version) GROUP BY stream_id) AS p
        USING (stream_id) WHERE (c.version, c.n) IS DISTINCT FROM (p.version, p.n)),
    (SELECT count(*) FROM dead_letters)";

/// Every event once in the inbox, in per-stream order; every counter at its stream's last
/// version with one count per event; no dead letters.
async fn check(pool: &PgPool, events: &[ForeignEvent]) {
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
    let versions: Vec<i64> = events.iter().map(|e| e.stream_version).collect();
    let check = sqlx::query_as(CHECK).bind(ids).bind(streams).bind(versions);
    let found: (i64, i64, i64, i64, i64, i64) = check.fetch_one(pool).await.expect("checking");
    let what = "inbox rows repeated, missing, extra, out of their stream's order; counters \
                off their stream's last version; dead letters";
    assert_eq!(found, (0, 0, 0, 0, 0, 0), "{what}");
}

/// A run's rows, or the medians'; the consumer's row adds its rate over each raw rate.
fn print_rows(run: &str, n: usize, [pull, insert, consumer]: [f64; 3]) {
    let row = |name: &str, s: f64| {
        let rate = n as f64 / s;
        format!("{run:<4} {name:<28} {n:>8} {s:>8.3} {rate:>9.0}")
    };
    println!("{}", row("raw JetStream pull + ack", pull));
    println!("{}", row("raw batched INSERT + upsert", insert));
    let ratios = format!("{:>8.2} {:>9.2}", pull / consumer, insert / consumer);
    println!("{} {ratios}", row("consumer (Consumer::run)", consumer));
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    (values[(values.len() - 1) / 2] + values[values.len() / 2]) / 2.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (n, streams) = (args.messages, args.streams.min(args.messages));
    assert!(streams > 0, "--messages and --streams must be positive");
    let js = event_store::nats::jetstream(connect_nats().await);
    let ns = unique("bench_cons");
    let config = ConsumerConfig {
        stream: format!("{ns}_events"),
        subject_prefix: format!("{ns}.events"),
        durable: String::new(),
        dead_letter_subject: format!("{ns}.deadletter"),
        max_deliver: 10,
        newer_schema_delay: event_store::consumer::NEWER_SCHEMA_DELAY,
        replicas: args.replicas,
    };
    let (name, prefix) = (&config.stream, &config.subject_prefix);
    let stream =
        event_store::nats::declare_stream(&js, name, prefix, args.replicas, Declare::Other).await;
    let stream = stream.expect("creating the stream");
    let _guard = StreamGuard(name.clone());

    let recorded = events(n, streams);
    let start = Instant::now();
    let duplicates = publish(&js, prefix, &recorded).await;
    let held = stream.get_info().await.expect("stream info").state.messages;
    assert_eq!((duplicates, held), (0, n as u64), "messages published once");
    let seconds = start.elapsed().as_secs_f64();
    println!("published {n} messages over {streams} streams to {name} in {seconds:.2} s");
    let events: Vec<ForeignEvent> = recorded.iter().map(foreign).collect();

    let mut runs = Vec::new();
    for run in 1..=args.repeat {
        let db = TestDb::new().await;
        // The services' pool settings (no ping before each checkout), not the fixture's.
        let pool = event_store::pool::connect_lazy(&db.url, 20).expect("the bench pool");
        sqlx::raw_sql(TABLES).execute(&pool).await.expect("tables");

        let pull = raw_pull(&stream, prefix, &format!("raw-pull-{run}"), n).await;
        let insert = raw_insert(&pool, &events).await;
        let mut config = config.clone();
        config.durable = format!("bench-consumer-{run}");
        let (consumed, batches) = consumer(&pool, &js, config, &events).await;
        runs.push([pull, insert, consumed].map(|d| d.as_secs_f64()));
        pool.close().await;

        let mean = batches.iter().sum::<usize>() as f64 / batches.len().max(1) as f64;
        let max = batches.iter().max().unwrap_or(&0);
        println!(
            "run {run}: consumer checked (every event once in the inbox in stream order, every \
             counter at its stream's last version, no dead letters); its batches as handed to \
             the reaction: mean {mean:.0}, max {max}, {} transactions",
            batches.len()
        );
    }

    println!(
        "\n{:<4} {:<28} {:>8} {:>8} {:>9} {:>8} {:>9}",
        "run", "measurement", "messages", "seconds", "rate/s", "vs pull", "vs insert"
    );
    for (run, seconds) in runs.iter().enumerate() {
        print_rows(&(run + 1).to_string(), n, *seconds);
    }
    if runs.len() > 1 {
        let medians = [0, 1, 2].map(|i| median(runs.iter().map(|r| r[i]).collect()));
        print_rows("med", n, medians);
    }
}
