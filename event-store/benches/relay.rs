//! Relay throughput beside raw JetStream publishing of the same events, in one run against the
//! same Postgres and NATS, and the size of the envelope it puts on each message.
//!
//!     cargo bench -p event-store --bench relay -- --events 20000 --repeat 3
//!
//! N events (a realistic price change: payload, correlation and causation ids, trace context,
//! idempotency key) are appended first, untimed, over S streams. Then, each run, on a stream
//! of its own:
//!
//! - **raw publish**: the stored events' payloads published pipelined in windows of the relay's
//!   batch size, every ack awaited, with only `Nats-Msg-Id`: what NATS allows;
//! - **relay**: `Relay::run` from position 0, timed until its checkpoint reaches the store's
//!   head, then checked: the stream holds every event once.
//!
//! It also prints the headers of the relay's first message and their size on the wire
//! (`NATS/1.0` line, each `name: value` line, the blank line), the envelope's cost per message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use clap::Parser;
use event_store::nats::Declare;
use event_store::testing::{connect_nats, unique, TestDb};
use event_store::{
    checkpoint, EventStore, ExpectedVersion, Metadata, NewEvent, Relay, RelayConfig,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser, Debug)]
struct Args {
    /// Events in the store.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Streams they are spread over.
    #[arg(long, default_value_t = 200)]
    streams: usize,
    /// Measurements of each kind (the median is printed when more than one).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Send the pre-CloudEvents headers too (the services' default for this release);
    /// `false`: the CloudEvents headers only.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    legacy_headers: bool,
    /// Copies of each stream (3 on a three-node cluster: `NATS_URL` names one of its nodes).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// cargo bench passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Appends `n` price changes over `streams` streams, 100 events per append.
async fn fill(store: &EventStore, n: usize, streams: usize) {
    let per_stream = n / streams;
    for s in 0..streams {
        let product = Uuid::new_v4();
        let stream = format!("product-{product}");
        let mut version = 0;
        while version < per_stream {
            let chunk: Vec<NewEvent> = (version..(version + 100).min(per_stream))
                .map(|i| {
                    NewEvent::new(
                        "PriceChanged",
                        json!({
                            "product_id": product,
                            "old_price": { "amount_minor": 1000 + i, "currency": "USD" },
                            "price": { "amount_minor": 1001 + i, "currency": "USD" },
                        }),
                    )
                    .with_schema_version(2)
                    .with_metadata(Metadata {
                        correlation_id: Some(format!("req-{s}-{i}")),
                        causation_id: Some(Uuid::new_v4().to_string()),
                        traceparent: Some(format!("00-{}-{:016x}-01", Uuid::new_v4().simple(), i)),
                        idempotency_key: Some(Uuid::new_v4().to_string()),
                    })
                })
                .collect();
            store
                .append(&stream, ExpectedVersion::Exact(version as i64), &chunk)
                .await
                .expect("appending");
            version += chunk.len();
        }
    }
}

/// How many messages stream `name` holds. Right after a burst of publishes JetStream's API can
/// time out; that is asked again, not read as an empty stream.
async fn held(js: &jetstream::Context, name: &str) -> u64 {
    let mut attempts = 0;
    loop {
        let info = async {
            js.get_stream(name)
                .await?
                .get_info()
                .await
                .map_err(Into::into)
        };
        let result: Result<_, Box<dyn std::error::Error + Send + Sync>> = info.await;
        match result {
            Ok(info) => return info.state.messages,
            Err(e) if attempts < 20 => {
                attempts += 1;
                eprintln!("asking stream {name} for its size again: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("stream {name}: {e}"),
        }
    }
}

async fn raw_publish(
    js: &jetstream::Context,
    store: &EventStore,
    name: &str,
    replicas: usize,
) -> Duration {
    let prefix = format!("{name}.events");
    event_store::nats::declare_stream(js, name, &prefix, replicas, Declare::Other)
        .await
        .expect("the raw stream");
    let events = store
        .read_all(0, i64::MAX)
        .await
        .expect("reading the store");
    let start = Instant::now();
    for window in events.chunks(500) {
        let mut acks = Vec::with_capacity(window.len());
        for event in window {
            let message = PublishMessage::build()
                .payload(serde_json::to_vec(&event.payload).unwrap().into())
                .message_id(event.event_id.to_string());
            let subject = format!("{prefix}.{}.{}", event.stream_id, event.event_type);
            acks.push(js.send_publish(subject, message).await.expect("publishing"));
        }
        for ack in acks {
            ack.await.expect("publish ack");
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(
        held(js, name).await,
        events.len() as u64,
        "raw: every event once"
    );
    elapsed
}

async fn relay(
    js: &jetstream::Context,
    store: &EventStore,
    name: &str,
    n: usize,
    legacy_headers: bool,
    replicas: usize,
) -> Duration {
    let mut config = RelayConfig::new(name, format!("{name}.events"));
    config.replicas = replicas;
    config.producer.legacy_headers = legacy_headers;
    // A checkpoint of its own each run, starting at 0 (checkpoints only move forward).
    config.checkpoint = name.to_owned();
    let head = store.head_position().await.expect("head");
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let task =
        tokio::spawn(Relay::new(store.clone(), js.clone(), config.clone()).run(shutdown.clone()));
    // The checkpoint is saved at most every 100 ms while events flow, and at once when idle.
    while checkpoint::load(store.pool(), &config.checkpoint)
        .await
        .unwrap()
        < head
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(held(js, name).await, n as u64, "relay: every event once");
    elapsed
}

/// The headers of message 1 of `stream` and their size on the wire.
async fn envelope(js: &jetstream::Context, stream: &str) -> usize {
    let message = js
        .get_stream(stream)
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .unwrap();
    let mut size = "NATS/1.0\r\n".len() + "\r\n".len();
    println!("headers of the relay's first message:");
    for (name, values) in message.headers.iter() {
        for value in values {
            println!("  {name}: {}", value.as_str());
            size += name.to_string().len() + 2 + value.as_str().len() + 2;
        }
    }
    println!("payload {} bytes", message.payload.len());
    size
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let n = args.events / args.streams * args.streams;
    let js = event_store::nats::jetstream(connect_nats().await);
    let db = TestDb::new().await;
    let store = EventStore::new(event_store::pool::connect_lazy(&db.url, 20).expect("pool"));
    let start = Instant::now();
    fill(&store, n, args.streams).await;
    println!(
        "appended {n} events over {} streams in {:.1} s",
        args.streams,
        start.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    let mut names = Vec::new();
    for run in 1..=args.repeat {
        let raw_name = unique("bench_raw");
        let relay_name = unique("bench_relay");
        names.extend([raw_name.clone(), relay_name.clone()]);
        let raw = raw_publish(&js, &store, &raw_name, args.replicas).await;
        let relayed = relay(
            &js,
            &store,
            &relay_name,
            n,
            args.legacy_headers,
            args.replicas,
        )
        .await;
        rows.push([raw.as_secs_f64(), relayed.as_secs_f64()]);
        println!(
            "run {run}: raw publish {:.2} s, relay {:.2} s",
            raw.as_secs_f64(),
            relayed.as_secs_f64()
        );
    }
    let header_bytes = envelope(&js, &names[1]).await;
    for name in names {
        let _ = js.delete_stream(&name).await;
    }

    println!(
        "\n{:<4} {:<24} {:>8} {:>8} {:>9} {:>8}",
        "run", "measurement", "events", "seconds", "rate/s", "vs raw"
    );
    let print = |run: &str, [raw, relay]: [f64; 2]| {
        for (what, seconds) in [("raw publish (msg id only)", raw), ("relay", relay)] {
            println!(
                "{run:<4} {what:<24} {n:>8} {seconds:>8.2} {:>9.0} {:>8.2}",
                n as f64 / seconds,
                raw / seconds
            );
        }
    };
    for (i, row) in rows.iter().enumerate() {
        print(&(i + 1).to_string(), *row);
    }
    if rows.len() > 1 {
        print(
            "med",
            [0, 1].map(|i| median(rows.iter().map(|r| r[i]).collect())),
        );
    }
    println!("envelope: {header_bytes} bytes of headers per message");
}
