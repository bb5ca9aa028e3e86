//! The history checker against real databases, mutation-checked: a producer store and a
//! consumer inbox that agree are clean, and each way of breaking the inbox (a row deleted, a
//! row forged, a row doubled once its constraint is dropped, two rows' receipt order swapped,
//! a payload changed) is reported as what it is.

use std::collections::HashSet;

use event_store::testing::TestDb;
use serde_json::json;
use sqlx::PgPool;
use tests::history::{check, History};
use uuid::Uuid;

/// A producer store holding two interleaved streams of three events each, and a consumer
/// whose inbox recorded all of them, in the producer's order.
async fn delivered() -> (TestDb, TestDb) {
    let (producer, consumer) = (TestDb::new().await, TestDb::new().await);
    let mut tx = producer.pool.begin().await.expect("a transaction");
    for (ordinal, version, stream) in (1..=3).flat_map(|v| [(2 * v - 1, v, "a"), (2 * v, v, "b")]) {
        let event_id = Uuid::new_v4();
        let payload = json!({ "stream": stream, "version": version });
        sqlx::query(
            "INSERT INTO events (position, stream_id, stream_version, event_id, event_type, \
                                 payload) \
             VALUES ((pg_current_xact_id()::text::bigint << 20) + $1, $2, $3, $4, \
                     'PriceChanged', $5)",
        )
        .bind(ordinal)
        .bind(format!("product-{stream}"))
        .bind(version)
        .bind(event_id)
        .bind(&payload)
        .execute(&mut *tx)
        .await
        .expect("appending an event");
    }
    tx.commit().await.expect("committing the events");
    sqlx::query(
        "INSERT INTO inbox (event_id, stream_id, stream_version, event_type, schema_version, \
                            payload, metadata, source_position) \
         SELECT event_id, stream_id, stream_version, event_type, schema_version, payload, \
                metadata, position \
         FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::int4[], $6::jsonb[], \
                     $7::jsonb[], $8::int8[]) WITH ORDINALITY \
              AS t(event_id, stream_id, stream_version, event_type, schema_version, payload, \
                   metadata, position, ord) \
         ORDER BY ord",
    )
    .bind(column::<Uuid>(&producer.pool, "event_id").await)
    .bind(column::<String>(&producer.pool, "stream_id").await)
    .bind(column::<i64>(&producer.pool, "stream_version").await)
    .bind(column::<String>(&producer.pool, "event_type").await)
    .bind(column::<i32>(&producer.pool, "schema_version").await)
    .bind(column::<serde_json::Value>(&producer.pool, "payload").await)
    .bind(column::<serde_json::Value>(&producer.pool, "metadata").await)
    .bind(column::<i64>(&producer.pool, "position").await)
    .execute(&consumer.pool)
    .await
    .expect("recording the events");
    (producer, consumer)
}

/// One column of the producer's events, in position order.
async fn column<T>(pool: &PgPool, name: &str) -> Vec<T>
where
    T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    sqlx::query_scalar(&format!("SELECT {name} FROM events ORDER BY position"))
        .fetch_all(pool)
        .await
        .expect("reading the events")
}

async fn history(producer: &TestDb, consumer: &TestDb) -> History {
    check(&producer.pool, &consumer.pool, &HashSet::new())
        .await
        .expect("checking the history")
}

async fn run(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn an_inbox_that_recorded_every_event_once_in_order_is_clean() {
    let (producer, consumer) = delivered().await;
    let found = history(&producer, &consumer).await;
    found.assert_clean();
    assert_eq!((found.events, found.received), (6, 6));
}

#[tokio::test]
async fn a_deleted_inbox_row_is_lost() {
    let (producer, consumer) = delivered().await;
    run(
        &consumer.pool,
        "DELETE FROM inbox WHERE stream_id = 'product-b' AND stream_version = 2",
    )
    .await;
    let found = history(&producer, &consumer).await;
    assert_eq!(
        found.summary(),
        "lost=1 duplicated=0 unexpected=0 out_of_order=0",
        "{}",
        found.details()
    );
    assert!(found.lost.examples[0].contains("product-b v2"));
}

#[tokio::test]
async fn a_forged_row_is_unexpected_and_one_at_a_recorded_version_also_duplicated() {
    let (producer, consumer) = delivered().await;
    run(
        &consumer.pool,
        "INSERT INTO inbox (event_id, stream_id, stream_version, event_type, schema_version, \
                            payload, metadata, source_position) \
         VALUES (gen_random_uuid(), 'product-c', 1, 'PriceChanged', 1, '{}', '{}', 1)",
    )
    .await;
    let found = history(&producer, &consumer).await;
    assert_eq!(
        found.summary(),
        "lost=0 duplicated=0 unexpected=1 out_of_order=0",
        "{}",
        found.details()
    );
    // At a version already recorded: only possible once the constraint is gone, then caught.
    run(
        &consumer.pool,
        "ALTER TABLE inbox DROP CONSTRAINT inbox_stream_version_key; \
         INSERT INTO inbox (event_id, stream_id, stream_version, event_type, schema_version, \
                            payload, metadata, source_position) \
         VALUES (gen_random_uuid(), 'product-a', 3, 'PriceChanged', 1, '{}', '{}', 1)",
    )
    .await;
    let found = history(&producer, &consumer).await;
    // product-a v3 received again after v3: also out of order.
    assert_eq!(
        found.summary(),
        "lost=0 duplicated=1 unexpected=2 out_of_order=1",
        "{}",
        found.details()
    );
}

#[tokio::test]
async fn an_event_recorded_twice_once_the_constraints_are_dropped_is_duplicated() {
    let (producer, consumer) = delivered().await;
    run(
        &consumer.pool,
        "ALTER TABLE inbox DROP CONSTRAINT inbox_event_id_key, \
                           DROP CONSTRAINT inbox_stream_version_key; \
         INSERT INTO inbox (event_id, stream_id, stream_version, event_type, schema_version, \
                            payload, metadata, source_position) \
         SELECT event_id, stream_id, stream_version, event_type, schema_version, payload, \
                metadata, source_position \
         FROM inbox WHERE stream_id = 'product-a' AND stream_version = 1",
    )
    .await;
    let found = history(&producer, &consumer).await;
    // Counted once by id and once by (stream, version); arriving after v3, out of order too.
    assert_eq!(
        found.summary(),
        "lost=0 duplicated=2 unexpected=0 out_of_order=1",
        "{}",
        found.details()
    );
}

#[tokio::test]
async fn swapping_two_rows_receipt_order_is_out_of_order() {
    let (producer, consumer) = delivered().await;
    // seq is GENERATED ALWAYS: the two rows are re-inserted with each other's seq.
    run(
        &consumer.pool,
        "CREATE TEMP TABLE moved AS SELECT * FROM inbox \
             WHERE stream_id = 'product-a' AND stream_version IN (1, 2); \
         DELETE FROM inbox WHERE event_id IN (SELECT event_id FROM moved); \
         INSERT INTO inbox OVERRIDING SYSTEM VALUE \
         SELECT (SELECT seq FROM moved o WHERE o.event_id <> m.event_id), event_id, stream_id, \
                stream_version, event_type, schema_version, payload, metadata, \
                source_position, received_at \
         FROM moved m",
    )
    .await;
    let found = history(&producer, &consumer).await;
    assert_eq!(
        found.summary(),
        "lost=0 duplicated=0 unexpected=0 out_of_order=1",
        "{}",
        found.details()
    );
    assert!(found.out_of_order.examples[0].contains("product-a v1"));
}

#[tokio::test]
async fn a_payload_that_differs_from_the_store_is_unexpected() {
    let (producer, consumer) = delivered().await;
    run(
        &consumer.pool,
        "UPDATE inbox SET payload = '{\"price_cents\": 1}' \
         WHERE stream_id = 'product-b' AND stream_version = 3",
    )
    .await;
    let found = history(&producer, &consumer).await;
    assert_eq!(
        found.summary(),
        "lost=0 duplicated=0 unexpected=1 out_of_order=0",
        "{}",
        found.details()
    );
    assert!(found.unexpected.examples[0].contains("stored as product-b v3"));
}
