//! The baseline for command throughput: raw Postgres inserts of one event per transaction, at
//! the same concurrency, into the event store's own `events` table (same indexes and checks) in
//! a fresh database. No read, no version check, no HTTP: the most a command could do.

use std::sync::LazyLock;

use event_store::store::POSITION_BASE;
use event_store::testing::TestDb;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::bench::Bench;
use super::cpu::{self, Usage};
use super::report::Throughput;
use super::schedule::closed_loop;

/// One statement, one transaction (autocommit). The position is derived from the transaction
/// id (and the database's position offset) exactly as the store derives it, so the table's
/// CHECK holds and the baseline pays what an append pays for it.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO events \
         (position, stream_id, stream_version, event_id, event_type, payload, metadata) \
         VALUES ({POSITION_BASE} + 1, $1, 1, $2, 'OrderPlaced', $3, $4)"
    )
});

/// Measures the raw insert rate at `clients` concurrency, with a pool of `clients + 2`; and
/// where the CPU went meanwhile (taken before the connections close and their counts vanish).
pub async fn raw_inserts(bench: &Bench) -> anyhow::Result<(Throughput, Usage)> {
    let db = TestDb::new().await;
    let pool = PgPoolOptions::new()
        .max_connections(bench.args.clients as u32 + 2)
        .min_connections(bench.args.clients as u32)
        .connect(&db.url)
        .await?;
    let product = Uuid::new_v4();
    let insert_pool = pool.clone();
    let plan = bench.closed_loop();
    let databases = [bench.databases.clone(), vec![db.name.clone()]].concat();
    let before = cpu::snapshot(&bench.pids, &databases);
    let runs = closed_loop(plan, move |_, _| {
        let pool = insert_pool.clone();
        async move {
            let order = Uuid::now_v7();
            // The payload and metadata of a real OrderPlaced event.
            let payload = json!({
                "order_id": order, "customer_id": "bench-0", "total_cents": 1000,
                "lines": [{ "product_id": product, "quantity": 1, "unit_price_cents": 1000 }],
            });
            let metadata = json!({ "correlation_id": Uuid::new_v4().to_string() });
            sqlx::query(INSERT.as_str())
                .bind(format!("order-{order}"))
                .bind(Uuid::now_v7())
                .bind(payload)
                .bind(metadata)
                .execute(&pool)
                .await
                .map(|_| ())
        }
    })
    .await;
    let usage = cpu::between(&before, &cpu::snapshot(&bench.pids, &databases));
    pool.close().await;
    drop(db);
    Ok((
        Throughput::from_runs("raw INSERT, 1 event/tx", plan, &runs)?,
        usage,
    ))
}
