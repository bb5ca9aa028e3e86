//! The relay: the events table is the outbox. It tails the store from its checkpoint,
//! publishes each event to JetStream with `Nats-Msg-Id` = event id, awaits every ack of a
//! batch, and only then advances the checkpoint. A crash anywhere re-publishes (the server
//! drops the duplicates), never loses. While NATS is down appends still succeed; the relay
//! retries with backoff and catches up when it returns.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::leader::Leadership;
use crate::retry::Backoff;
use crate::{checkpoint, envelope, nats, EventStore, RecordedEvent, Tail};

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
        loop {
            let Some(mut leadership) =
                Leadership::acquire(&self.store, &self.config.checkpoint, &shutdown).await
            else {
                return;
            };
            if self.lead(&mut leadership, &shutdown).await {
                leadership.release().await;
                return;
            }
        }
    }

    /// Publishes from the checkpoint on, saving the checkpoint on the lock connection so a
    /// replica that lost leadership stores nothing. Returns `true` on shutdown, `false` when
    /// leadership was lost.
    async fn lead(&self, leadership: &mut Leadership, shutdown: &CancellationToken) -> bool {
        let mut backoff = Backoff::default();
        'resume: loop {
            if shutdown.is_cancelled() {
                return true;
            }
            let start =
                match checkpoint::load(&mut *leadership.conn(), &self.config.checkpoint).await {
                    Ok(position) => position,
                    Err(e) => {
                        tracing::warn!(error = %e, "relay cannot load its checkpoint");
                        if !leadership.still_held_after(&mut backoff, shutdown).await {
                            return false;
                        }
                        continue 'resume;
                    }
                };
            tracing::info!(position = start, "relay started");
            let mut tail = Tail::new(self.store.clone(), start, self.config.batch_size);
            // Published beyond the saved checkpoint since this moment.
            let mut unsaved_since: Option<Instant> = None;
            loop {
                let save_by = unsaved_since.map(|since| since + CHECKPOINT_EVERY);
                let Some(batch) = leadership
                    .next_batch(&mut tail, save_by, &mut backoff, shutdown)
                    .await
                else {
                    if shutdown.is_cancelled() {
                        if unsaved_since.is_some() {
                            self.save(leadership, tail.position()).await;
                        }
                        return true;
                    }
                    return false;
                };
                backoff.reset();
                if !batch.is_empty() {
                    while let Err(e) = self.publish(&batch).await {
                        tracing::warn!(error = %e, "relay cannot publish; retrying the batch");
                        if !leadership.still_held_after(&mut backoff, shutdown).await {
                            return false;
                        }
                        if shutdown.is_cancelled() {
                            return true;
                        }
                    }
                    backoff.reset();
                    tracing::debug!(
                        position = tail.position(),
                        events = batch.len(),
                        "relay published"
                    );
                    unsaved_since.get_or_insert_with(Instant::now);
                }
                let due = unsaved_since
                    .is_some_and(|since| batch.is_empty() || since.elapsed() >= CHECKPOINT_EVERY);
                if due {
                    let last = tail.position();
                    while let Err(e) =
                        checkpoint::save(&mut *leadership.conn(), &self.config.checkpoint, last)
                            .await
                    {
                        tracing::warn!(error = %e, "relay cannot store its checkpoint; retrying");
                        if !leadership.still_held_after(&mut backoff, shutdown).await {
                            return false;
                        }
                        if shutdown.is_cancelled() {
                            return true;
                        }
                    }
                    unsaved_since = None;
                }
            }
        }
    }

    /// Saves the checkpoint once on the way out; a failure only means re-publishing.
    async fn save(&self, leadership: &mut Leadership, position: i64) {
        if let Err(e) =
            checkpoint::save(&mut *leadership.conn(), &self.config.checkpoint, position).await
        {
            tracing::warn!(error = %e, "relay cannot store its checkpoint on shutdown");
        }
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
