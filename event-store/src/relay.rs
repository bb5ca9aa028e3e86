//! The relay: the events table is the outbox. It tails the store from its checkpoint,
//! publishes each event to JetStream with `Nats-Msg-Id` = event id, awaits every ack of a
//! batch, and only then advances the checkpoint. A crash anywhere re-publishes (the server
//! drops the duplicates), never loses. While NATS is down appends still succeed; the relay
//! retries with backoff and catches up when it returns.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::leader::{Leadership, Work};
use crate::{checkpoint, envelope, nats, EventStore, RecordedEvent};

/// How long published events may wait for the checkpoint to be saved. Saving after every
/// batch would cost a commit per batch (under a steady trickle, per event) for nothing: after a
/// crash the relay re-publishes from the checkpoint, and JetStream (inside its window) and the
/// consumers' inboxes (forever) drop what was published twice. So the checkpoint is saved at
/// most this often while events flow, and at once when the relay goes idle or stops.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The checkpoint name under which the relay stores its position.
    pub checkpoint: String,
    /// The JetStream stream, created if missing.
    pub stream: String,
    /// Subjects are `<subject_prefix>.<stream id>.<event type>`.
    pub subject_prefix: String,
    pub batch_size: i64,
}

impl RelayConfig {
    pub fn new(stream: impl Into<String>, subject_prefix: impl Into<String>) -> Self {
        RelayConfig {
            checkpoint: "relay".to_owned(),
            stream: stream.into(),
            subject_prefix: subject_prefix.into(),
            batch_size: 500,
        }
    }

    pub fn subject(&self, event: &RecordedEvent) -> String {
        format!(
            "{}.{}.{}",
            self.subject_prefix, event.stream_id, event.event_type
        )
    }
}

pub struct Relay {
    store: EventStore,
    js: jetstream::Context,
    config: RelayConfig,
}

impl Relay {
    pub fn new(store: EventStore, js: jetstream::Context, config: RelayConfig) -> Self {
        Relay { store, js, config }
    }

    /// Runs until `shutdown`, finishing the batch in hand first. Among replicas of a service
    /// only the [`leader`](crate::leader) for the relay's checkpoint publishes; the others wait to take over.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = tracing::info_span!("relay", stream = %self.config.stream);
        self.run_instrumented(shutdown).instrument(span).await
    }

    async fn run_instrumented(self, shutdown: CancellationToken) {
        let mut work = Publishing {
            relay: &self,
            published: 0,
            unsaved_since: None,
        };
        let (role, batch_size) = (&self.config.checkpoint, self.config.batch_size);
        Leadership::lead(&self.store, role, batch_size, &mut work, &shutdown).await;
    }

    /// Publishes a batch pipelined, then awaits every ack.
    async fn publish(&self, batch: &[RecordedEvent]) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(batch.len());
        for event in batch {
            let (headers, payload) = envelope::encode(event)?;
            let message = PublishMessage::build()
                .payload(payload)
                .headers(headers)
                .message_id(event.event_id.to_string());
            match self
                .js
                .send_publish(self.config.subject(event), message)
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    self.recreate_stream_if_missing(&e).await;
                    return Err(e.into());
                }
            }
        }
        for ack in acks {
            if let Err(e) = ack.await {
                self.recreate_stream_if_missing(&e).await;
                return Err(e.into());
            }
        }
        Ok(())
    }

    async fn recreate_stream_if_missing(&self, error: &jetstream::context::PublishError) {
        if matches!(
            error.kind(),
            jetstream::context::PublishErrorKind::StreamNotFound
        ) {
            if let Err(e) =
                nats::ensure_stream(&self.js, &self.config.stream, &self.config.subject_prefix)
                    .await
            {
                tracing::warn!(error = %e, "cannot create the JetStream stream");
            }
        }
    }
}

/// The relay's leading: publishes from the checkpoint on, saving the checkpoint on the lock
/// connection (so a replica that lost leadership stores nothing) at most every
/// [`CHECKPOINT_EVERY`] while events flow, and at once when idle or stopping. After a failure
/// the leader starts again from the saved checkpoint: what was published since is published
/// again, and dropped as a duplicate.
struct Publishing<'r> {
    relay: &'r Relay,
    /// The position of the last event published.
    published: i64,
    /// Published beyond the saved checkpoint since this moment.
    unsaved_since: Option<Instant>,
}

impl Publishing<'_> {
    async fn save(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        checkpoint::save(&mut *conn, &self.relay.config.checkpoint, self.published)
            .await
            .context("storing the relay's checkpoint")?;
        self.unsaved_since = None;
        Ok(())
    }
}

impl Work for Publishing<'_> {
    async fn start(&mut self, conn: &mut PgConnection) -> anyhow::Result<i64> {
        let start = checkpoint::load(&mut *conn, &self.relay.config.checkpoint)
            .await
            .context("loading the relay's checkpoint")?;
        tracing::info!(position = start, "relay started");
        self.published = start;
        self.unsaved_since = None;
        Ok(start)
    }

    fn idle_by(&self) -> Option<Instant> {
        self.unsaved_since.map(|since| since + CHECKPOINT_EVERY)
    }

    async fn handle(
        &mut self,
        conn: &mut PgConnection,
        batch: &[RecordedEvent],
    ) -> anyhow::Result<()> {
        if let Some(last) = batch.last() {
            self.relay.publish(batch).await.context("publishing")?;
            self.published = last.position;
            tracing::debug!(
                position = self.published,
                events = batch.len(),
                "relay published"
            );
            self.unsaved_since.get_or_insert_with(Instant::now);
        }
        let due = self
            .unsaved_since
            .is_some_and(|since| batch.is_empty() || since.elapsed() >= CHECKPOINT_EVERY);
        if due {
            self.save(conn).await?;
        }
        Ok(())
    }

    /// Saves the checkpoint once on the way out; a failure only means re-publishing.
    async fn stop(&mut self, conn: &mut PgConnection) {
        if self.unsaved_since.is_some() {
            if let Err(e) = self.save(conn).await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "relay cannot store its checkpoint on shutdown"
                );
            }
        }
    }
}
