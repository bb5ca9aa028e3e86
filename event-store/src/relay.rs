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
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, message::PublishMessage};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::leader::{Leadership, Work};
use crate::repair::{self, Reason, Watermark};
use crate::retry::Backoff;
use crate::{checkpoint, envelope, metrics, nats, EventStore, RecordedEvent};

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
    /// Copies of the stream JetStream keeps (`NATS_STREAM_REPLICAS`): 1 on a single node, 3 on
    /// a cluster. The relay declares the stream with it, changing an existing stream's count.
    pub replicas: usize,
}

impl RelayConfig {
    pub fn new(stream: impl Into<String>, subject_prefix: impl Into<String>) -> Self {
        RelayConfig {
            checkpoint: "relay".to_owned(),
            stream: stream.into(),
            subject_prefix: subject_prefix.into(),
            batch_size: 500,
            producer: envelope::Producer::new("event-store"),
            replicas: 1,
        }
    }

    /// Declares the stream (creating it, or changing its replica count to [`Self::replicas`]).
    pub async fn declare_stream(
        &self,
        js: &jetstream::Context,
    ) -> anyhow::Result<jetstream::stream::Stream> {
        let declare = nats::Declare::Own;
        nats::declare_stream(
            js,
            &self.stream,
            &self.subject_prefix,
            self.replicas,
            declare,
        )
        .await
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
            rewound: None,
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
        let stream = self.config.declare_stream(&self.js).await?;
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

/// How long one message is sent again, under its own `Nats-Msg-Id` (so the stream keeps it
/// once however often it arrives), while JetStream cannot take it. A cluster electing a
/// stream leader answers with timeouts and 503 "no responders" for a few seconds: weather,
/// not a failure. After this the batch fails and the relay starts over from its checkpoint.
pub const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(15);

/// Publishes `batch` pipelined, then awaits every ack; a message whose ack fails for a
/// reason that passes (a timeout, no responders, a lost connection) is sent again on its
/// own, for up to [`PUBLISH_RETRY_FOR`]. A stream that turns out to be missing is declared
/// again (empty: the relay's tail check then rewinds).
pub(crate) async fn publish(
    js: &jetstream::Context,
    config: &RelayConfig,
    batch: &[RecordedEvent],
    sending: Sending,
) -> anyhow::Result<Vec<jetstream::publish::PublishAck>> {
    let mut sent = Vec::with_capacity(batch.len());
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
        let subject = config.subject(event);
        let ack = js.send_publish(subject.clone(), message.clone()).await;
        sent.push((subject, message, ack));
    }
    let mut acked = Vec::with_capacity(sent.len());
    // Whether the last message sent again was taken: then the next one that failed (for the
    // same passing reason, such as a stream just created or a leader just elected) is sent
    // again at once, so a batch costs one backoff, not one per message.
    let mut taken = false;
    for (subject, message, ack) in sent {
        let first = match ack {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let ack = match first {
            Ok(ack) => ack,
            Err(e) => resend(js, config, subject, message, e, &mut taken).await?,
        };
        acked.push(ack);
    }
    if let Sending::Again { reason, .. } = sending {
        repair::metrics::republished(reason, batch.len());
    }
    Ok(acked)
}

/// Sends `message` again after `error`, with the same message id, until JetStream takes it
/// or [`PUBLISH_RETRY_FOR`] has passed. A stream the server says does not exist is declared
/// again (no responders also answers a stream without a leader, so the server is asked
/// first; a lookup that fails is an election, not a missing stream).
///
/// A stream that refused the message all that time, although its server answers for it, is
/// broken: nats-server can leave a stream declared while its deletion runs without a store
/// ([`nats::REDECLARE_AFTER`]). It is replaced once (deleted, then declared again), and the
/// message gets as long again. Whatever the stream held is in the store: the relay's checks
/// and the consumers' watermarks send again what the consumers lack, as after any recreated
/// stream (docs/adr/0008-repair-from-the-store.md).
async fn resend(
    js: &jetstream::Context,
    config: &RelayConfig,
    subject: String,
    message: PublishMessage,
    mut error: PublishError,
    taken: &mut bool,
) -> Result<jetstream::publish::PublishAck, PublishError> {
    let mut deadline = Instant::now() + PUBLISH_RETRY_FOR;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let mut replaced = false;
    loop {
        let passing = matches!(
            error.kind(),
            PublishErrorKind::TimedOut
                | PublishErrorKind::StreamNotFound
                | PublishErrorKind::BrokenPipe
                | PublishErrorKind::Other
        );
        if error.kind() == PublishErrorKind::StreamNotFound && stream_is_gone(js, config).await {
            recreate_stream(js, config).await;
        } else if !replaced
            && Instant::now() >= deadline
            && refuses_to_store(&error)
            && js.get_stream(&config.stream).await.is_ok()
        {
            let why = format!("it took no message for {PUBLISH_RETRY_FOR:?}: {error}");
            replace_stream(js, config, &why).await;
            replaced = true;
            deadline = Instant::now() + PUBLISH_RETRY_FOR;
        } else if !passing || Instant::now() >= deadline {
            return Err(error);
        }
        metrics::publish_retried(&config.stream, retry_reason(error.kind()));
        tracing::debug!(error = %error, subject, "publish not acknowledged; sending it again");
        if !*taken {
            tokio::time::sleep(backoff.next_delay()).await;
        }
        let ack = match js.send_publish(subject.clone(), message.clone()).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        *taken = ack.is_ok();
        match ack {
            Ok(ack) => return Ok(ack),
            Err(e) => error = e,
        }
    }
}

/// The `reason` label of a publish sent again.
fn retry_reason(kind: PublishErrorKind) -> &'static str {
    match kind {
        PublishErrorKind::TimedOut => "timeout",
        PublishErrorKind::StreamNotFound => "no_responders",
        PublishErrorKind::BrokenPipe => "disconnected",
        _ => "refused",
    }
}

/// Whether the server says the relay's stream does not exist (not merely that no one
/// answered for it).
async fn stream_is_gone(js: &jetstream::Context, config: &RelayConfig) -> bool {
    match js.get_stream(&config.stream).await {
        Err(e) => matches!(
            e.kind(),
            jetstream::context::GetStreamErrorKind::JetStream(error)
                if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
        ),
        Ok(_) => false,
    }
}

/// Whether `error` is how a stream without a store answers a publish: "store failed" (10077,
/// nats-server 2.9) or no answer at all (2.15).
fn refuses_to_store(error: &PublishError) -> bool {
    match error.kind() {
        PublishErrorKind::TimedOut => true,
        PublishErrorKind::Other => std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|e| e.error_code() == jetstream::ErrorCode::STREAM_STORE_FAILED),
        _ => false,
    }
}

/// Deletes a stream that stores nothing any more and declares it again: one that refuses
/// every message though its server answers ([`resend`]), or one that loses what it
/// acknowledges ([`Publishing::rewound`]).
async fn replace_stream(js: &jetstream::Context, config: &RelayConfig, why: &str) {
    tracing::warn!(
        stream = %config.stream,
        why,
        "the stream stores nothing: replacing it (the repairs send again what it held)"
    );
    repair::metrics::gap_found("broken_stream");
    if let Err(e) = js.delete_stream(&config.stream).await {
        tracing::warn!(stream = %config.stream, error = %e, "cannot delete the broken stream");
    }
    recreate_stream(js, config).await;
}

/// Declares the stream again, [`nats::REDECLARE_AFTER`] after it was found missing.
async fn recreate_stream(js: &jetstream::Context, config: &RelayConfig) {
    tokio::time::sleep(nats::REDECLARE_AFTER).await;
    match config.declare_stream(js).await {
        Ok(_) => {
            tracing::warn!(stream = %config.stream, "the stream was missing; declared it again")
        }
        Err(e) => tracing::warn!(error = %e, "cannot create the JetStream stream"),
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
    /// Since the last rewind, until a tail check finds the stream holding what was sent
    /// again: whether the stream has acknowledged any of it. A stream that then lacks an
    /// event it acknowledged since the rewind loses what it takes (it acknowledges into a
    /// store whose files are gone, [`nats::REDECLARE_AFTER`]): it is replaced.
    rewound: Option<bool>,
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
                self.rewound = Some(false);
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
            if let Some(acked) = self.rewound.as_mut() {
                *acked = true;
            }
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
                if self.rewound == Some(true) {
                    let js = &self.relay.js;
                    let why = "it lacks an event it acknowledged since the last rewind";
                    replace_stream(js, &self.relay.config, why).await;
                }
                anyhow::bail!(
                    "the stream lacks events up to {} (it holds up to {to}); rewinding",
                    self.published
                );
            }
            self.rewound = None;
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
