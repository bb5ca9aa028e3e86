//! What reserving stock for one order costs against a product with a short stream and one with
//! a very long stream, in one run on one fresh database. Products load from their snapshot and
//! the events after it, so the two should cost the same (goal: long / short <= 1.2).
//!
//!     cargo bench -p product-service --bench reservation -- --lengths 10,100000
//!
//! Each product's stream is written as the service writes its events (`ProductCreated`, then
//! reservations each followed by its release, about every hundredth event a restock that the
//! next order keeps, every thousandth a price change), in large appends through `EventStore::append`, each
//! expecting the version the previous one left. No snapshot is written by hand: the first
//! reservation through the reaction folds the whole stream and writes one, as in service (its
//! cost is printed). After a few unmeasured reservations, M per product are measured,
//! interleaved between the products, each in its own transaction as the consumer runs them
//! one at a time: begin, `StockReservation::handle` on a fresh `OrderPlaced`, commit. For
//! contrast, the full fold of each stream (`read_stream` + `aggregate::fold`), once.
//!
//! The store is built as the service builds it (the `products` read model applied inline);
//! the events table is vacuumed and analysed once written, as autovacuum would do before long.
//! Needs Postgres as the tests do (DATABASE_URL).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use event_store::aggregate::{self, Loaded};
use event_store::consumer::{ForeignEvent, Reaction as _};
use event_store::testing::TestDb;
use event_store::wire::WireEvent as _;
use event_store::{EventStore, ExpectedVersion, Metadata, NewEvent};
use product_service::domain::events::{
    Money, PriceChanged, ProductCreated, ProductEvent, ProductRestocked, StockReleased,
    StockReserved,
};
use product_service::domain::product::{self, Product, ProductState};
use product_service::projections::products::ProductsProjection;
use product_service::reactions::StockReservation;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Events in each product's stream before the measurement, `ProductCreated` included.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100_000])]
    lengths: Vec<usize>,
    /// Reservations measured per product, each in its own transaction.
    #[arg(long, default_value_t = 500)]
    reservations: usize,
    /// Unmeasured reservations per product after the first (which takes the snapshot).
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Events per append while writing the streams.
    #[arg(long, default_value_t = 10_000)]
    append_size: usize,
    /// cargo bench passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const INITIAL_STOCK: i64 = 100_000;

/// A product's history after its creation, one event at a time, folded as it goes.
struct History {
    state: ProductState,
    /// The reservation the next event releases.
    open: Option<(Uuid, i64)>,
    /// The next reservation takes the restock before it for good.
    keep_next: bool,
    written: u64,
    /// Events that released nothing: the reservations, restocks and price changes.
    slots: u64,
}

impl History {
    fn new(created: &ProductEvent) -> History {
        History {
            state: product::evolve(ProductState::default(), created),
            open: None,
            keep_next: false,
            written: 0,
            slots: 0,
        }
    }

    /// Counts one more event that releases nothing, and returns the count.
    fn slot(&mut self) -> u64 {
        self.slots += 1;
        self.slots
    }

    /// The next event: a release right after each reservation; otherwise about every 50th a
    /// restock (which the next reservation keeps), every 500th a price change, the rest
    /// reservations of 1 to 3 units.
    fn next_event(&mut self) -> ProductEvent {
        self.written += 1;
        let product_id = self.state.product_id;
        let event: ProductEvent = if let Some((order_id, quantity)) = self.open.take() {
            StockReleased {
                product_id,
                order_id,
                quantity,
            }
            .into()
        } else if self.slot().is_multiple_of(500) {
            let old = self.state.price();
            let cents = if old.amount_minor == 2_500 {
                2_400
            } else {
                2_500
            };
            PriceChanged {
                product_id,
                price: Money {
                    amount_minor: cents,
                    currency: old.currency.clone(),
                },
                old_price: old,
            }
            .into()
        } else if self.slots.is_multiple_of(50) {
            self.keep_next = true;
            ProductRestocked {
                product_id,
                quantity: 2,
            }
            .into()
        } else {
            let (order_id, quantity) = (Uuid::now_v7(), 1 + (self.written % 3) as i64);
            if std::mem::take(&mut self.keep_next) {
                // An order that keeps what it reserved: 2 = the restock's quantity.
                StockReserved {
                    product_id,
                    order_id,
                    quantity: 2,
                }
                .into()
            } else {
                self.open = Some((order_id, quantity));
                StockReserved {
                    product_id,
                    order_id,
                    quantity,
                }
                .into()
            }
        };
        self.state = product::evolve(std::mem::take(&mut self.state), &event);
        event
    }
}

/// The event as the reaction or a command writes it: a fresh id, its type's schema version,
/// the metadata of the order that caused it.
fn stored(event: &ProductEvent) -> NewEvent {
    let metadata = Metadata {
        correlation_id: Some(format!("order-{}", Uuid::now_v7())),
        causation_id: Some(Uuid::now_v7().to_string()),
        traceparent: None,
        idempotency_key: None,
    };
    NewEvent::new(event.event_type(), event.payload())
        .with_schema_version(event.schema_version())
        .with_metadata(metadata)
}

/// Writes a product whose stream holds `length` events, `append_size` per append; returns
/// the state those events fold to and how long writing took.
async fn write_product(
    store: &EventStore,
    length: usize,
    append_size: usize,
) -> (Uuid, ProductState, Duration) {
    let started = Instant::now();
    let product_id = Uuid::now_v7();
    let created: ProductEvent = ProductCreated {
        product_id,
        name: format!("Bench product of {length} events"),
        price: Money {
            amount_minor: 2_500,
            currency: "USD".into(),
        },
        initial_stock: INITIAL_STOCK,
    }
    .into();
    let mut history = History::new(&created);
    let stream = product::stream_id(product_id);
    let mut chunk = vec![stored(&created)];
    let mut version = 0i64;
    let mut written = 1;
    loop {
        while chunk.len() < append_size && written < length {
            chunk.push(stored(&history.next_event()));
            written += 1;
        }
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let appended = store
            .append(&stream, expected, &chunk)
            .await
            .expect("appending the history");
        version = appended.stream_version;
        chunk.clear();
        if written >= length {
            break;
        }
    }
    assert_eq!(version, length as i64);
    (product_id, history.state, started.elapsed())
}

/// An `OrderPlaced` of one unit of `product_id`, as order-service publishes it.
fn order_placed(product_id: Uuid, position: i64) -> ForeignEvent {
    let order_id = Uuid::now_v7();
    ForeignEvent {
        event_id: Uuid::now_v7(),
        event_type: "OrderPlaced".to_owned(),
        stream_id: format!("order-{order_id}"),
        stream_version: 1,
        source_position: position,
        schema_version: 1,
        payload: json!({
            "order_id": order_id,
            "customer_id": "customer-1",
            "lines": [{ "product_id": product_id, "quantity": 1, "unit_price_cents": 2_500 }],
            "total_cents": 2_500,
        }),
        metadata: Metadata {
            correlation_id: Some(format!("bench-{order_id}")),
            ..Metadata::default()
        },
    }
}

/// One reservation as the consumer runs it: a transaction, the reaction, the commit.
async fn reserve(pool: &PgPool, reaction: &StockReservation, event: &ForeignEvent) -> Duration {
    let started = Instant::now();
    let mut tx = pool.begin().await.expect("a transaction");
    reaction
        .handle(&mut tx, event)
        .await
        .expect("the reservation is decided");
    tx.commit().await.expect("committed");
    started.elapsed()
}

struct Stats {
    mean: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

/// Mean and nearest-rank percentiles, in milliseconds.
fn stats(samples: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Stats {
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
        p50: rank(0.50),
        p99: rank(0.99),
        max: ms[ms.len() - 1],
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(
        !args.lengths.is_empty() && args.reservations > 0 && args.append_size > 0,
        "--lengths, --reservations and --append-size must not be empty or zero"
    );
    assert!(
        args.lengths.iter().all(|&n| n >= 1),
        "every stream holds at least its ProductCreated"
    );
    println!(
        "load average at start: {} ({} cores)",
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let db = TestDb::new().await;
    product_service::app::migrate(&db.pool)
        .await
        .expect("product-service's migrations");
    let store = db.store().with_inline(vec![Arc::new(ProductsProjection)]);
    let reaction = StockReservation::new(store.clone());

    // The streams, one product per length, in large appends.
    let mut products = Vec::new();
    for &length in &args.lengths {
        let (id, state, took) = write_product(&store, length, args.append_size).await;
        println!(
            "wrote a product of {length} events in {} appends of up to {} in {:.2} s \
             (stock {} available, {} reserved)",
            length.div_ceil(args.append_size),
            args.append_size,
            took.as_secs_f64(),
            state.stock_available,
            state.stock_reserved
        );
        let kinds: Vec<(String, i64)> = sqlx::query_as(
            "SELECT event_type, count(*) FROM events WHERE stream_id = $1 \
             GROUP BY event_type ORDER BY count(*) DESC",
        )
        .bind(product::stream_id(id))
        .fetch_all(&db.pool)
        .await
        .expect("counting the events");
        let kinds: Vec<String> = kinds.iter().map(|(t, n)| format!("{n} {t}")).collect();
        println!("    {}", kinds.join(", "));
        products.push((length, id, state));
    }
    sqlx::query("VACUUM ANALYZE events")
        .execute(&db.pool)
        .await
        .expect("vacuum");

    // The first reservation finds no snapshot, folds the whole stream and writes one.
    let mut position = 0;
    for (length, id, _) in &products {
        let stream = product::stream_id(*id);
        let has_snapshot: bool =
            sqlx::query_scalar("SELECT exists (SELECT FROM snapshots WHERE stream_id = $1)")
                .bind(&stream)
                .fetch_one(&db.pool)
                .await
                .expect("looking for a snapshot");
        assert!(!has_snapshot, "no snapshot before the first reservation");
        position += 1;
        let took = reserve(&db.pool, &reaction, &order_placed(*id, position)).await;
        let snapshot: i64 =
            sqlx::query_scalar("SELECT stream_version FROM snapshots WHERE stream_id = $1")
                .bind(&stream)
                .fetch_one(&db.pool)
                .await
                .expect("the reservation wrote a snapshot");
        assert_eq!(snapshot, *length as i64 + 1);
        println!(
            "first reservation on the {length}-event stream (no snapshot: folds it whole, \
             writes one at version {snapshot}): {:.2} ms",
            ms(took)
        );
    }
    for _ in 0..args.warmup {
        for (_, id, _) in &products {
            position += 1;
            reserve(&db.pool, &reaction, &order_placed(*id, position)).await;
        }
    }

    // The measurement: round after round, one reservation per product, the order of the
    // products alternating, so both see the same machine.
    let mut samples: Vec<Vec<Duration>> =
        vec![Vec::with_capacity(args.reservations); products.len()];
    // The order events of every round, made beforehand: rounds[round][product].
    let rounds: Vec<Vec<ForeignEvent>> = (0..args.reservations)
        .map(|_| {
            products
                .iter()
                .map(|(_, id, _)| {
                    position += 1;
                    order_placed(*id, position)
                })
                .collect()
        })
        .collect();
    let measured = Instant::now();
    for (round, placed) in rounds.iter().enumerate() {
        let mut order: Vec<usize> = (0..products.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let took = reserve(&db.pool, &reaction, &placed[i]).await;
            samples[i].push(took);
        }
    }
    let measured = measured.elapsed();

    println!(
        "\n{} reservations per product, interleaved, one transaction each \
         (begin, StockReservation::handle, commit), in {:.1} s; load average now {}",
        args.reservations,
        measured.as_secs_f64(),
        load_average()
    );
    println!(
        "{:>14} {:>10} {:>10} {:>10} {:>10}",
        "stream events", "mean ms", "p50 ms", "p99 ms", "max ms"
    );
    let all: Vec<Stats> = samples.iter().map(|s| stats(s)).collect();
    for ((length, _, _), s) in products.iter().zip(&all) {
        println!(
            "{length:>14} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            s.mean, s.p50, s.p99, s.max
        );
    }
    let shortest = (0..products.len())
        .min_by_key(|&i| products[i].0)
        .expect("a product");
    for (i, (length, _, _)) in products.iter().enumerate() {
        if i == shortest {
            continue;
        }
        let (long, short) = (&all[i], &all[shortest]);
        println!(
            "ratio {length} / {} events: mean {:.2}, p50 {:.2}, p99 {:.2} (goal: <= 1.2)",
            products[shortest].0,
            long.mean / short.mean,
            long.p50 / short.p50,
            long.p99 / short.p99
        );
    }

    // Every reservation was confirmed, and the snapshot path still gives the full fold. For
    // contrast, what the full fold costs (once, the events cached by now).
    let per_product = 1 + args.warmup + args.reservations;
    println!();
    for (length, id, written) in &products {
        let stream = product::stream_id(*id);
        let started = Instant::now();
        let events = store.read_stream(&stream, 1).await.expect("reading");
        let read = started.elapsed();
        let full =
            aggregate::fold::<Product>(Loaded::default(), &events).expect("the stream folds");
        let folded = started.elapsed() - read;
        assert_eq!(full.version, (length + per_product) as i64);
        assert_eq!(
            full.state.stock_available,
            written.stock_available - per_product as i64,
            "every reservation took one unit"
        );
        let started = Instant::now();
        let mut conn = db.pool.acquire().await.expect("a connection");
        let mut loaded = aggregate::load_many::<Product>(&mut conn, &[*id])
            .await
            .expect("loading");
        let snapshot_load = started.elapsed();
        let loaded = loaded.remove(id).expect("the product");
        assert_eq!(loaded.loaded, full, "the snapshot path gives the full fold");
        println!(
            "full fold of the {length}-event product ({} events now): read_stream {:.1} ms \
             + fold {:.1} ms = {:.1} ms; load_many from its snapshot \
             ({} events folded on top): {:.2} ms",
            events.len(),
            ms(read),
            ms(folded),
            ms(read + folded),
            loaded.folded,
            ms(snapshot_load)
        );
    }
    println!("load average at end: {}", load_average());
    db.pool.close().await;
}
