//! The relay: the events table is the outbox. It tails the store from its checkpoint,
//! publishes each event to JetStream with `Nats-Msg-Id` = event id, awaits every ack of a
//! batch, and only then advances the checkpoint. A crash anywhere re-publishes (the server
//! drops the duplicates), never loses. While NATS is down appends still succeed; the relay
//! retries with backoff and catches up when it returns.
//!
//! The broker can lose what it acknowledged ([`crate::repair`]). So the leader checks that the
//! stream still holds the event at its checkpoint when it starts leading (also after every
//! failed batch) and every [`repair::TICK`], and rewinds to the last event the stream provably
//! holds; it then announces a [`repair::Watermark`] so consumers can find losses in the middle.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::leader::{Leadership, Work};
use crate::repair::{self, Reason, Watermark};
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
    /// Who the events' envelope names as their producer, and which headers it writes.
    pub producer: envelope::Producer,
}

impl RelayConfig {
    pub fn new(stream: impl Into<String>, subject_prefix: impl Into<String>) -> Self {
        RelayConfig {
            checkpoint: "relay".to_owned(),
            stream: stream.into(),
            subject_prefix: subject_prefix.into(),
            batch_size: 500,
            producer: envelope::Producer::new("event-store"),
        }
    }

    /// Where the service's replicas take repair requests ([`repair::repair_subject`]).
    pub fn repair_subject(&self) -> String {
        repair::repair_subject(&self.subject_prefix)
    }

    /// Where the leader announces its watermark ([`repair::watermark_subject`]).
    pub fn watermark_subject(&self) -> String {
        repair::watermark_subject(&self.subject_prefix)
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
            count: 0,
            at_checkpoint: None,
            again: None,
            sequence: 0,
            reset_after: None,
            unsaved_since: None,
            next_tick: Instant::now(),
        };
        let (role, batch_size) = (&self.config.checkpoint, self.config.batch_size);
        let lead = Leadership::lead(&self.store, role, batch_size, &mut work, &shutdown);
        // Every replica answers repair requests from the store; only the leader publishes
        // the live tail.
        let respond = repair::responder::serve(&self.store, &self.js, &self.config, &shutdown);
        tokio::join!(lead, respond);
    }

    /// Whether the stream still holds `event` (the last one published): the last message on
    /// its subject carries it or a later event. When it does not, the position to publish
    /// from again: that of the last message sent in order before it, or 0 when none is found
    /// near the stream's end.
    async fn check_tail(&self, event: &RecordedEvent) -> anyhow::Result<Option<i64>> {
        let stream =
            nats::ensure_stream(&self.js, &self.config.stream, &self.config.subject_prefix).await?;
        let holds = match stream
            .get_last_raw_message_by_subject(&self.config.subject(event))
            .await
        {
            Ok(message) => {
                envelope::position_of(&message.headers).is_some_and(|p| p >= event.position)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                false
            }
            Err(e) => return Err(e.into()),
        };
        if holds {
            return Ok(None);
        }
        // The last message the relay sent in order (repairs may follow it with older events).
        let info = stream.get_info().await?;
        let (first, mut sequence) = (info.state.first_sequence, info.state.last_sequence);
        let mut looked = 0;
        while info.state.messages > 0 && sequence >= first.max(1) && looked < TAIL_LOOK_BACK {
            looked += 1;
            match stream.get_raw_message(sequence).await {
                Ok(message) if !envelope::is_republished(&message.headers) => {
                    // Messages after the event asked about were published to the stream as it
                    // is now (after a reset, say); the question is what it holds before.
                    match envelope::position_of(&message.headers) {
                        Some(position) if position < event.position => return Ok(Some(position)),
                        _ => {}
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        jetstream::stream::RawMessageErrorKind::NoMessageFound
                    ) => {}
                Err(e) => return Err(e.into()),
            }
            sequence -= 1;
        }
        Ok(Some(0))
    }
}

/// Messages looked at from the end of the stream for one sent in order, before the relay
/// gives up and publishes everything again.
const TAIL_LOOK_BACK: usize = 64;

/// How a batch goes out: for the first time, or again to repair the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    First,
    /// Under message ids of repair `generation`, marked with the reason.
    Again {
        generation: u64,
        reason: Reason,
    },
}

/// Publishes `batch` pipelined, then awaits every ack. A stream that turns out to be missing
/// is declared again (empty: the relay's tail check then rewinds).
pub(crate) async fn publish(
    js: &jetstream::Context,
    config: &RelayConfig,
    batch: &[RecordedEvent],
    sending: Sending,
) -> anyhow::Result<Vec<jetstream::publish::PublishAck>> {
    let mut acks = Vec::with_capacity(batch.len());
    for event in batch {
        let (id, republished) = match sending {
            Sending::First => (event.event_id.to_string(), None),
            Sending::Again { generation, reason } => (
                envelope::republished_msg_id(event, generation),
                Some(reason.as_str()),
            ),
        };
        let (headers, payload) = envelope::encode(&config.producer, event, republished)?;
        let message = PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(id);
        match js.send_publish(config.subject(event), message).await {
            Ok(ack) => acks.push(ack),
            Err(e) => {
                recreate_stream_if_missing(js, config, &e).await;
                return Err(e.into());
            }
        }
    }
    let mut acked = Vec::with_capacity(acks.len());
    for ack in acks {
        match ack.await {
            Ok(ack) => acked.push(ack),
            Err(e) => {
                recreate_stream_if_missing(js, config, &e).await;
                return Err(e.into());
            }
        }
    }
    if let Sending::Again { reason, .. } = sending {
        repair::metrics::republished(reason, batch.len());
    }
    Ok(acked)
}

async fn recreate_stream_if_missing(
    js: &jetstream::Context,
    config: &RelayConfig,
    error: &jetstream::context::PublishError,
) {
    if matches!(
        error.kind(),
        jetstream::context::PublishErrorKind::StreamNotFound
    ) {
        if let Err(e) = nats::ensure_stream(js, &config.stream, &config.subject_prefix).await {
            tracing::warn!(error = %e, "cannot create the JetStream stream");
        }
    }
}

/// The relay's leading: publishes from the checkpoint on, saving the checkpoint on the lock
/// connection (so a replica that lost leadership stores nothing) at most every
/// [`CHECKPOINT_EVERY`] while events flow, and at once when idle or stopping. After a failure
/// the leader starts again from the saved checkpoint: what was published since is published
/// again, and dropped as a duplicate. Every [`repair::TICK`] it checks the stream's tail and
/// announces its watermark.
struct Publishing<'r> {
    relay: &'r Relay,
    /// The position of the last event published.
    published: i64,
    /// How many events have a position up to `published` (the watermark's count).
    count: i64,
    /// The last event published, whose presence in the stream the tail check asks about.
    at_checkpoint: Option<RecordedEvent>,
    /// After a rewind: events up to this position go out again, as a repair.
    again: Option<(i64, Sending)>,
    /// The highest stream sequence JetStream acknowledged to this leader: an ack below it
    /// means the stream was reset (recreated empty) meanwhile.
    sequence: u64,
    /// The last event published before a reset was noticed, for the tail check to ask about.
    reset_after: Option<i64>,
    /// Published beyond the saved checkpoint since this moment.
    unsaved_since: Option<Instant>,
    /// When to check the tail and announce the watermark next.
    next_tick: Instant,
}

impl Publishing<'_> {
    async fn save(&mut self, conn: &mut PgConnection) -> anyhow::Result<()> {
        checkpoint::save(&mut *conn, &self.relay.config.checkpoint, self.published)
            .await
            .context("storing the relay's checkpoint")?;
        self.unsaved_since = None;
        Ok(())
    }

    /// Checks that the stream still holds the last event published; when it does not,
    /// returns the position to publish from again.
    async fn rewind_to(&self) -> anyhow::Result<Option<i64>> {
        match &self.at_checkpoint {
            Some(event) => self
                .relay
                .check_tail(event)
                .await
                .context("checking the stream's tail"),
            _ => Ok(None),
        }
    }

    async fn announce(&self) {
        let watermark = Watermark {
            position: self.published,
            events: self.count,
        };
        let Ok(body) = serde_json::to_vec(&watermark) else {
            return;
        };
        let client = self.relay.js.client();
        let subject = self.relay.config.watermark_subject();
        if let Err(e) = client.publish(subject, body.into()).await {
            tracing::debug!(error = %e, "cannot announce the watermark");
        }
    }
}

impl Work for Publishing<'_> {
    async fn start(&mut self, conn: &mut PgConnection) -> anyhow::Result<i64> {
        let saved = checkpoint::load(&mut *conn, &self.relay.config.checkpoint)
            .await
            .context("loading the relay's checkpoint")?;
        // The checkpoint may be ahead of `published` (saved by an earlier leader), never
        // behind it unless a rewind is under way.
        let from = match (&self.again, self.reset_after.take()) {
            (_, Some(before_reset)) => before_reset.min(saved),
            (Some(_), None) => self.published.min(saved),
            (None, None) => saved,
        };
        self.sequence = 0;
        self.at_checkpoint = sqlx::query_as(&format!(
            "SELECT {} FROM events WHERE position = $1",
            crate::store::EVENT_COLUMNS
        ))
        .bind(from)
        .fetch_optional(&mut *conn)
        .await
        .context("reading the event at the relay's checkpoint")?;
        let start = match self.rewind_to().await {
            Ok(Some(to)) => {
                tracing::warn!(
                    checkpoint = from,
                    rewound_to = to,
                    "the stream lacks events the relay published; publishing them again"
                );
                repair::metrics::gap_found("tail");
                let generation = repair::generation();
                let reason = Reason::Tail;
                self.again = Some((saved.max(from), Sending::Again { generation, reason }));
                to
            }
            Ok(None) => from,
            // NATS down: publishing will fail and bring the relay back here.
            Err(e) => {
                tracing::debug!(error = format!("{e:#}"), "tail not checked");
                from
            }
        };
        self.count = sqlx::query_scalar("SELECT count(*) FROM events WHERE position <= $1")
            .bind(start)
            .fetch_one(&mut *conn)
            .await
            .context("counting the events published")?;
        tracing::info!(position = start, "relay started");
        self.published = start;
        self.unsaved_since = None;
        self.next_tick = Instant::now() + repair::TICK;
        Ok(start)
    }

    fn idle_by(&self) -> Option<Instant> {
        let save = self.unsaved_since.map(|since| since + CHECKPOINT_EVERY);
        Some(save.map_or(self.next_tick, |save| save.min(self.next_tick)))
    }

    async fn handle(
        &mut self,
        conn: &mut PgConnection,
        batch: &[RecordedEvent],
    ) -> anyhow::Result<()> {
        if let Some(last) = batch.last() {
            let sending = match self.again {
                Some((until, sending)) if batch[0].position <= until => sending,
                _ => Sending::First,
            };
            let acks = publish(&self.relay.js, &self.relay.config, batch, sending)
                .await
                .context("publishing")?;
            let first = acks
                .iter()
                .filter(|a| !a.duplicate)
                .map(|a| a.sequence)
                .min();
            if first.is_some_and(|first| first <= self.sequence) {
                self.reset_after = Some(self.published);
                anyhow::bail!(
                    "JetStream acknowledged sequence {first:?} after {}: the stream was reset",
                    self.sequence
                );
            }
            self.sequence = self
                .sequence
                .max(acks.iter().map(|a| a.sequence).max().unwrap_or(0));
            if self.again.is_some_and(|(until, _)| last.position >= until) {
                self.again = None;
            }
            self.published = last.position;
            self.count += batch.len() as i64;
            self.at_checkpoint = Some(last.clone());
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
        if Instant::now() >= self.next_tick {
            self.next_tick = Instant::now() + repair::TICK;
            if let Some(to) = self.rewind_to().await.unwrap_or(None) {
                anyhow::bail!(
                    "the stream lacks events up to {} (it holds up to {to}); rewinding",
                    self.published
                );
            }
            self.announce().await;
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
