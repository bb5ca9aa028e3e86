//! The relay: the events table is the outbox. It tails the store from its checkpoint,
//! publishes each event to JetStream with `Nats-Msg-Id` = event id, awaits every ack of a
//! batch, and only then advances the checkpoint. A crash anywhere re-publishes (the server
//! drops the duplicates), never loses. While NATS is down appends still succeed; the relay
//! retries with backoff and catches up when it returns.

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::HeaderMap;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::leader::{Backoff, Leadership};
use crate::{checkpoint, nats, EventStore, RecordedEvent, Tail};

/// Headers every published event carries besides `Nats-Msg-Id`.
pub mod headers {
    pub const EVENT_TYPE: &str = "Es-Event-Type";
    pub const STREAM_ID: &str = "Es-Stream-Id";
    pub const STREAM_VERSION: &str = "Es-Stream-Version";
    pub const POSITION: &str = "Es-Position";
    pub const SCHEMA_VERSION: &str = "Es-Schema-Version";
    pub const CORRELATION_ID: &str = "Es-Correlation-Id";
    pub const CAUSATION_ID: &str = "Es-Causation-Id";
    pub const TRACEPARENT: &str = "traceparent";
    /// The whole metadata object as JSON.
    pub const METADATA: &str = "Es-Metadata";
}

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
            loop {
                let Some(batch) = leadership
                    .next_batch(&mut tail, &mut backoff, shutdown)
                    .await
                else {
                    return shutdown.is_cancelled();
                };
                backoff = Backoff::default();
                while let Err(e) = self.publish(&batch).await {
                    tracing::warn!(error = %e, "relay cannot publish; retrying the batch");
                    if !leadership.still_held_after(&mut backoff, shutdown).await {
                        return false;
                    }
                    if shutdown.is_cancelled() {
                        return true;
                    }
                }
                backoff = Backoff::default();
                let last = tail.position();
                while let Err(e) =
                    checkpoint::save(&mut *leadership.conn(), &self.config.checkpoint, last).await
                {
                    tracing::warn!(error = %e, "relay cannot store its checkpoint; retrying");
                    if !leadership.still_held_after(&mut backoff, shutdown).await {
                        return false;
                    }
                    if shutdown.is_cancelled() {
                        return true;
                    }
                }
                tracing::debug!(position = last, events = batch.len(), "relay published");
            }
        }
    }

    /// Publishes a batch pipelined, then awaits every ack.
    async fn publish(&self, batch: &[RecordedEvent]) -> anyhow::Result<()> {
        let mut acks = Vec::with_capacity(batch.len());
        for event in batch {
            let message = PublishMessage::build()
                .payload(serde_json::to_vec(&event.payload)?.into())
                .headers(event_headers(event)?)
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

/// The headers carried by an event's message, so consumers need not parse the payload to route.
pub fn event_headers(event: &RecordedEvent) -> anyhow::Result<HeaderMap> {
    let mut h = HeaderMap::new();
    h.insert(headers::EVENT_TYPE, event.event_type.as_str());
    h.insert(headers::STREAM_ID, event.stream_id.as_str());
    h.insert(headers::STREAM_VERSION, event.stream_version.to_string());
    h.insert(headers::POSITION, event.position.to_string());
    h.insert(headers::SCHEMA_VERSION, event.schema_version.to_string());
    h.insert(headers::METADATA, serde_json::to_string(&event.metadata)?);
    if let Some(id) = &event.metadata.correlation_id {
        h.insert(headers::CORRELATION_ID, id.as_str());
    }
    if let Some(id) = &event.metadata.causation_id {
        h.insert(headers::CAUSATION_ID, id.as_str());
    }
    if let Some(tp) = &event.metadata.traceparent {
        h.insert(headers::TRACEPARENT, tp.as_str());
    }
    Ok(h)
}
