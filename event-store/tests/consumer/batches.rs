//! Batches: the messages a pull has ready are recorded in one transaction, and what one bad
//! message in a batch costs the others (nothing but a second try).

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::stream;
use event_store::testing::read_inbox;
use sqlx::PgPool;
use uuid::Uuid;

use crate::fixture::*;

/// Transactions that recorded the inbox's rows: each row carries its transaction's start.
async fn recording_transactions(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT received_at) FROM inbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Each stream's handled versions, in the order they were handled.
async fn versions_by_stream(fx: &Fixture) -> HashMap<String, Vec<i64>> {
    let mut by_stream: HashMap<String, Vec<i64>> = HashMap::new();
    for (_, stream, version) in fx.handled().await {
        by_stream.entry(stream).or_default().push(version);
    }
    by_stream
}

/// Publishes `per_stream` versions of each of `streams` streams, interleaved; returns the ids.
async fn publish_interleaved(fx: &Fixture, streams: usize, per_stream: i64) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for version in 1..=per_stream {
        for s in 0..streams {
            let id = Uuid::now_v7();
            fx.publish_event(id, &format!("thing-{s}"), version).await;
            ids.push(id);
        }
    }
    ids
}

#[tokio::test]
async fn messages_waiting_together_are_recorded_in_few_transactions_in_stream_order() {
    let fx = Fixture::new().await;
    publish_interleaved(&fx, 10, 20).await;

    let running = fx.start();
    eventually(Duration::from_secs(20), "all 200 are handled", || async {
        handled_count(&fx.db.pool).await == 200
    })
    .await;
    fx.drained().await;

    assert_eq!(running.stop().await, 0);
    for (stream, versions) in versions_by_stream(&fx).await {
        assert_eq!(versions, (1..=20).collect::<Vec<_>>(), "{stream}");
    }
    let transactions = recording_transactions(&fx.db.pool).await;
    assert!(
        transactions < 100,
        "200 messages waiting together took {transactions} transactions"
    );
}

#[tokio::test]
async fn a_poison_message_in_the_middle_of_a_batch_costs_the_others_nothing() {
    let fx = Fixture::new().await;
    let before = publish_interleaved(&fx, 4, 5).await;
    let poison = Uuid::now_v7();
    fx.publish(
        "bad-1",
        headers(poison, "bad-1", 1),
        serde_json::json!({ "poison": true }).to_string(),
    )
    .await;
    let mut after = Vec::new();
    for s in 0..4 {
        let id = Uuid::now_v7();
        fx.publish_event(id, &format!("thing-{s}"), 6).await;
        after.push(id);
    }

    let running = fx.start();
    eventually(
        Duration::from_secs(20),
        "the 24 good ones are handled",
        || async { handled_count(&fx.db.pool).await == 24 },
    )
    .await;
    fx.drained().await;

    assert_eq!(running.stop().await, 1, "only the poison is dead-lettered");
    let dead: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT kind, payload FROM dead_letters")
        .fetch_all(&fx.db.pool)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "poison");
    for (stream, versions) in versions_by_stream(&fx).await {
        assert_eq!(versions, (1..=6).collect::<Vec<_>>(), "{stream}");
    }
    let inbox = read_inbox(&fx.db.pool, 0, 100).await.unwrap();
    assert_eq!(inbox.len(), 24);
    assert!(inbox.iter().all(|(_, e)| e.event_id != poison));
    for id in before.iter().chain(&after) {
        // Handled in the batch that was rolled back, then once more alone: one effect.
        assert!(fx.reaction.attempts(*id) <= 2, "{id}");
    }
}

#[tokio::test]
async fn duplicates_inside_one_batch_and_across_batches_are_recognised() {
    let fx = Fixture::without_stream().await;
    // A short duplicate window, so JetStream stores every copy and only the inbox can tell.
    fx.js
        .create_stream(stream::Config {
            name: fx.config.stream.clone(),
            subjects: vec![format!("{}.>", fx.config.subject_prefix)],
            duplicate_window: Duration::from_millis(100),
            ..Default::default()
        })
        .await
        .unwrap();
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    fx.publish_event(first, "thing-1", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fx.publish_event(first, "thing-1", 1).await;
    fx.publish_event(second, "thing-1", 2).await;

    let running = fx.start();
    eventually(Duration::from_secs(10), "both are handled", || async {
        handled_count(&fx.db.pool).await == 2
    })
    .await;
    fx.drained().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    fx.publish_event(first, "thing-1", 1).await;
    fx.publish_event(second, "thing-1", 2).await;
    fx.drained().await;

    assert_eq!(running.stop().await, 0);
    let stream = fx.js.get_stream(&fx.config.stream).await.unwrap();
    assert_eq!(stream.get_info().await.unwrap().state.messages, 5);
    let handled: Vec<Uuid> = fx.handled().await.into_iter().map(|h| h.0).collect();
    assert_eq!(handled, [first, second]);
    assert_eq!(fx.reaction.attempts(first), 1);
    assert_eq!(fx.reaction.attempts(second), 1);
}

#[tokio::test]
async fn a_reaction_meeting_a_concurrent_write_is_decided_again_at_once_not_redelivered() {
    let fx = Fixture::new().await;
    let (id, other) = (Uuid::now_v7(), Uuid::now_v7());
    fx.reaction.conflict(id, 3);
    fx.publish_event(id, "thing-1", 1).await;
    fx.publish_event(other, "thing-2", 1).await;

    let running = fx.start();
    eventually(Duration::from_secs(10), "both are handled", || async {
        handled_count(&fx.db.pool).await == 2
    })
    .await;
    fx.drained().await;

    assert_eq!(running.stop().await, 0);
    assert!(fx.reaction.attempts(id) >= 4);
    let stream = fx.js.get_stream(&fx.config.stream).await.unwrap();
    let info = stream.consumer_info(&fx.config.durable).await.unwrap();
    // Every delivery counts; a nak'd message would have been delivered again.
    assert_eq!(
        info.delivered.consumer_sequence, 2,
        "retried in place, not through a nak"
    );
}

#[tokio::test]
async fn two_replicas_sharing_the_durable_consumer_under_batch_load_apply_each_event_once_in_order()
{
    let fx = Fixture::new().await;
    let (first, second) = (fx.start(), fx.start());
    let ids = publish_interleaved(&fx, 20, 25).await;

    eventually(Duration::from_secs(30), "all 500 are handled", || async {
        handled_count(&fx.db.pool).await == 500
    })
    .await;
    fx.drained().await;

    assert_eq!(first.stop().await + second.stop().await, 0);
    let handled: Vec<Uuid> = fx.handled().await.into_iter().map(|h| h.0).collect();
    let mut once = handled.clone();
    once.sort();
    once.dedup();
    assert_eq!((handled.len(), once.len()), (ids.len(), ids.len()));
    for (stream, versions) in versions_by_stream(&fx).await {
        assert_eq!(versions, (1..=25).collect::<Vec<_>>(), "{stream}");
    }
}

/// Holds the commit of the transaction that handles an event of `slow-1` (a deferred trigger
/// on `handled`) until an event of `quick-1` is committed by another transaction, for at
/// most five seconds; `waited` says whether it saw one.
const HOLD_COMMIT: &str = "\
CREATE TABLE waited (saw_later bool NOT NULL); \
CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
DECLARE deadline timestamptz := clock_timestamp() + interval '5 seconds'; \
BEGIN \
  LOOP \
    IF EXISTS (SELECT 1 FROM handled WHERE stream_id = 'quick-1') THEN \
      INSERT INTO waited VALUES (true); RETURN NULL; \
    END IF; \
    IF clock_timestamp() > deadline THEN \
      INSERT INTO waited VALUES (false); RETURN NULL; \
    END IF; \
    PERFORM pg_sleep(0.02); \
  END LOOP; \
END $$; \
CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON handled \
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.stream_id = 'slow-1') \
  EXECUTE FUNCTION hold_commit();";

#[tokio::test]
async fn the_next_batch_is_recorded_while_the_one_before_it_commits() {
    let fx = Fixture::new().await;
    sqlx::raw_sql(HOLD_COMMIT)
        .execute(&fx.db.pool)
        .await
        .unwrap();
    let (slow, quick) = (Uuid::now_v7(), Uuid::now_v7());
    let running = fx.start();
    fx.publish_event(slow, "slow-1", 1).await;
    eventually(
        Duration::from_secs(10),
        "the first batch's commit is held",
        || async {
            let holding: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event = 'PgSleep'",
            )
            .fetch_one(&fx.db.pool)
            .await
            .unwrap();
            holding > 0
        },
    )
    .await;
    // Another stream's event, published while the first batch commits: a batch of its own.
    fx.publish_event(quick, "quick-1", 1).await;
    eventually(Duration::from_secs(20), "both are handled", || async {
        handled_count(&fx.db.pool).await == 2
    })
    .await;
    fx.drained().await;

    assert_eq!(running.stop().await, 0);
    let waited: Vec<bool> = sqlx::query_scalar("SELECT saw_later FROM waited")
        .fetch_all(&fx.db.pool)
        .await
        .unwrap();
    assert_eq!(
        waited,
        [true],
        "the later batch committed while the first one's commit was held"
    );
}
