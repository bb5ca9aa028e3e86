//! How fast `orders` is rebuilt from the store, beside the rate of merely reading the same
//! events in pages of the same size (`read_all`, nothing applied), in one run on one fresh
//! database: two rounds of each, alternating, the faster of each kept. Prints both rates,
//! their ratio and the peak memory (VmHWM, reset after filling the store).
//!
//! `cargo bench -p order-service --bench replay`; REPLAY_BENCH_ORDERS (default 500000 orders,
//! 2.1 events each: placed, confirmed, every tenth cancelled) and REPLAY_BENCH_PAGE (default
//! the replay default) change the size. Needs Postgres as the tests do (DATABASE_URL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use event_store::replay::{self, Options, Target, DEFAULT_PAGE_SIZE};
use event_store::testing::TestDb;
use event_store::EventStore;
use order_service::projections::orders::OrdersProjection;
use tokio_util::sync::CancellationToken;

/// Orders per filling transaction: ~2.1 events each stays well below the 2^20 events a
/// transaction can hold (positions are `(xid << 20) + ordinal`).
const ORDERS_PER_TX: i64 = 50_000;

/// One transaction's worth of order streams, generated in SQL. Order ids are time-ordered
/// like the service's (`Uuid::now_v7()`: 48 bits of milliseconds, version 7, random bits),
/// one order a millisecond; confirmations follow their order ~300 orders later, so a page
/// mixes new orders with updates of earlier ones. Payloads are what `OrderEvent` writes.
const FILL_SQL: &str = r#"
INSERT INTO events (position, stream_id, stream_version, event_id, event_type, payload, recorded_at)
SELECT (pg_current_xact_id()::text::bigint << 20)
           + row_number() OVER (ORDER BY o.n + (e.version - 1) * 300, e.version),
       'order-' || o.id, e.version, gen_random_uuid(), e.kind, e.payload,
       o.at + (e.version - 1) * 300 * interval '1 millisecond'
FROM (
    SELECT n, to_timestamp((1767225600000 + n) / 1000.0) AS at,
           (lpad(to_hex(1767225600000 + n), 12, '0') || '7' || substr(h, 1, 3) || '8'
               || substr(h, 4, 15))::uuid AS id
    FROM generate_series($1::bigint, $2::bigint) AS n, md5('order-' || n) AS h
) o
CROSS JOIN LATERAL (VALUES
    (1, 'OrderPlaced', jsonb_build_object(
        'order_id', o.id,
        'customer_id', 'customer-' || (o.n % 1000),
        'lines', jsonb_build_array(jsonb_build_object(
            'product_id', md5('product-' || (o.n % 100))::uuid,
            'quantity', 1 + o.n % 3,
            'unit_price_cents', 250)),
        'total_cents', 250 * (1 + o.n % 3))),
    (2, 'OrderConfirmed', jsonb_build_object('order_id', o.id)),
    (3, 'OrderCancelled', jsonb_build_object('order_id', o.id))
) AS e(version, kind, payload)
WHERE e.version < 3 OR o.n % 10 = 0
"#;

fn env_number(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's peak resident set size (VmHWM), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets VmHWM to the current RSS (Linux), so the next reading covers what follows only.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Reads every event in pages, applying nothing: the floor of any rebuild.
async fn read_everything(store: &EventStore, page: i64) -> (u64, f64) {
    let started = Instant::now();
    let (mut after, mut events) = (0, 0u64);
    loop {
        let batch = store.read_all(after, page).await.expect("reading");
        let Some(last) = batch.last() else { break };
        after = last.position;
        events += batch.len() as u64;
    }
    (events, started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let orders = env_number("REPLAY_BENCH_ORDERS", 500_000);
    let page = env_number("REPLAY_BENCH_PAGE", DEFAULT_PAGE_SIZE);
    let db = TestDb::new().await;
    order_service::app::migrate(&db.pool)
        .await
        .expect("migrating");
    let store = db.store();

    let started = Instant::now();
    let mut from = 1;
    while from <= orders {
        let to = (from + ORDERS_PER_TX - 1).min(orders);
        sqlx::query(FILL_SQL)
            .bind(from)
            .bind(to)
            .execute(&db.pool)
            .await
            .expect("filling the store");
        from = to + 1;
    }
    sqlx::query("VACUUM ANALYZE events")
        .execute(&db.pool)
        .await
        .expect("vacuum");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .expect("counting");
    println!(
        "store: {stored} events of {orders} order streams, written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Two rounds of each, alternating, keeping the faster of each: the machine is shared, and
    // the first read also warms the cache for what follows.
    let target = Target::store(Arc::new(OrdersProjection));
    let peak_reset = reset_peak_rss();
    let mut baseline_runs = Vec::new();
    let mut reports = Vec::new();
    for _ in 0..2 {
        let (read, seconds) = read_everything(&store, page).await;
        assert_eq!(read, u64::try_from(stored).unwrap());
        baseline_runs.push(seconds);
        let report = replay::rebuild(
            &store,
            &target,
            &Options { page_size: page },
            &|_| {},
            &CancellationToken::new(),
        )
        .await
        .expect("the rebuild succeeds");
        assert_eq!(report.events_read, read);
        reports.push(report);
    }
    let peak = peak_rss_kib();
    let read_first = u64::try_from(stored).unwrap();
    let baseline_seconds = baseline_runs.iter().copied().fold(f64::MAX, f64::min);
    let baseline = read_first as f64 / baseline_seconds;
    let report = reports
        .iter()
        .min_by(|a, b| a.elapsed.cmp(&b.elapsed))
        .expect("two rebuilds");
    let rebuild = report.events_per_second();
    let rebuild_runs: Vec<String> = reports
        .iter()
        .map(|r| format!("{:.2} s", r.elapsed.as_secs_f64()))
        .collect();

    println!("page size: {page} events");
    println!(
        "baseline (read_all in pages, nothing applied): {read_first} events in {baseline_seconds:.2} s \
         = {baseline:.0} events/s (runs: {})",
        baseline_runs
            .iter()
            .map(|s| format!("{s:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "rebuild of orders: {} events, {} rows, in {:.2} s = {rebuild:.0} events/s (runs: {})",
        report.events_read,
        report.rows_written,
        report.elapsed.as_secs_f64(),
        rebuild_runs.join(", ")
    );
    println!(
        "ratio rebuild / baseline: {:.2} (goal: at least 0.5)",
        rebuild / baseline
    );
    match peak {
        Some(kib) => println!(
            "peak RSS of the process while reading and rebuilding (VmHWM{}): {:.1} MiB",
            if peak_reset {
                ", reset before it"
            } else {
                ", since start"
            },
            kib as f64 / 1024.0
        ),
        None => println!("peak RSS: not available (no /proc/self/status)"),
    }
}
