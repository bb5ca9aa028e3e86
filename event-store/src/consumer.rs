//! Consuming the other service's events from JetStream, exactly once in effect.
//!
//! A durable pull consumer (explicit ack, finite max_deliver, one filter subject: nats-server
//! 2.9 compatible) feeds each message to the service's handlers inside one transaction that
//! also records the event in the inbox (event id unique): a duplicate is acknowledged without
//! effect, forever, not only inside JetStream's de-duplication window. The ack is sent after
//! the commit. Per-stream order is enforced with the inbox's stream versions: an event whose
//! predecessor has not been recorded yet is parked (held unacknowledged, kept alive with
//! progress acks) and applied as soon as the predecessor is, whether this process or another
//! replica records it; only after [`PARK_LIMIT`] is it nak'd for redelivery. A message that cannot be
//! decoded or applied (poison) is recorded in `dead_letters`, published to the dead-letter
//! subject with its error, counted, and acknowledged, so it never blocks what follows.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, AckKind};
use async_nats::HeaderMap;
use futures::future::BoxFuture;
use futures::StreamExt;
use sqlx::{PgConnection, PgExecutor};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::leader::Backoff;
use crate::relay::headers;
use crate::{metrics, nats, EventStore, Metadata, StoreError};

/// Delay before a nak'd message (predecessor missing, transient failure) is redelivered.
const NAK_DELAY: Duration = Duration::from_secs(1);
/// How long a delivered message stays with this consumer before the server redelivers it: after
/// a crash, in-flight messages wait this long. Short, because a premature redelivery costs
/// nothing (the inbox recognises the duplicate).
const ACK_WAIT: Duration = Duration::from_secs(5);
/// How long a message may wait parked for its stream's predecessor before it is nak'd (and,
/// on its last delivery, dead-lettered). Covers a crashed replica's in-flight messages, which
/// come back after `ACK_WAIT`.
const PARK_LIMIT: Duration = Duration::from_secs(30);
/// Most messages parked at once; beyond it, early messages are nak'd as a fallback. Parked
/// messages count against the consumer's `max_ack_pending` (1000 by default).
const MAX_PARKED: usize = 500;
/// How often parked messages are retried (a replica may have recorded their predecessor) and
/// kept alive.
const PARK_RETRY: Duration = Duration::from_millis(200);
/// Messages asked for per pull request; small enough to finish well inside `ACK_WAIT`.
const PULL_BATCH: usize = 50;
const IDLE_HEARTBEAT: Duration = Duration::from_secs(5);
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// Consecutive errors from the message stream after which the consumer is recreated.
const STREAM_ERRORS_BEFORE_RECREATE: u32 = 3;
/// Error texts in dead-letter headers are cut to this many characters.
const MAX_ERROR_HEADER: usize = 1000;

/// Headers a dead-lettered message carries besides its original ones.
pub mod dead_letter_headers {
    /// Why the message was dead-lettered.
    pub const ERROR: &str = "Es-Dead-Letter-Error";
    /// The durable consumer that gave up on it.
    pub const CONSUMER: &str = "Es-Dead-Letter-Consumer";
}

/// An event of the other service, as received (and as recorded in the inbox).
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub stream_id: String,
    pub stream_version: i64,
    /// The event's global position in the other service's store.
    pub source_position: i64,
    pub schema_version: i32,
    pub payload: serde_json::Value,
    pub metadata: Metadata,
}

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The event can never be applied (bad payload, broken invariant): dead-letter it.
    #[error("poison message: {0}")]
    Poison(String),
    /// Worth retrying later (database unavailable, a concurrency conflict).
    #[error("transient failure: {0}")]
    Transient(#[from] anyhow::Error),
}

/// Something a service does with the other service's events: a reaction that appends events
/// of its own, or a projection of foreign events (order-service's catalogue).
pub trait Reaction: Send + Sync + 'static {
    fn name(&self) -> &str;

    /// Handles one event inside the consumer's transaction. Appends go through
    /// [`EventStore::append_in_tx`] on the same connection.
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ForeignEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>>;
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The other service's JetStream stream.
    pub stream: String,
    /// Consumes `<subject_prefix>.>`.
    pub subject_prefix: String,
    /// Durable consumer name.
    pub durable: String,
    /// Where poison messages are published, with their error in headers.
    pub dead_letter_subject: String,
    pub max_deliver: i64,
}

pub struct Consumer {
    store: EventStore,
    js: async_nats::jetstream::Context,
    config: ConsumerConfig,
    handlers: Vec<Arc<dyn Reaction>>,
    dead_letters: Arc<AtomicU64>,
}

/// What became of one message's event in the database.
enum Outcome {
    Applied,
    Duplicate,
    /// An earlier version of the stream has not been recorded yet.
    Early {
        recorded: i64,
    },
    Poison(String),
    /// Worth another delivery later.
    Transient(String),
}

/// What became of a message handed to [`Consumer::process_event`].
enum Disposition {
    /// Acknowledged, nak'd or dead-lettered; `applied` when its event took effect now.
    Done { applied: bool },
    /// Its stream's predecessor is not recorded yet: the caller parks it.
    Park,
}

/// A message waiting for its stream's predecessor.
struct ParkedMessage {
    message: jetstream::Message,
    event: ForeignEvent,
    parked_at: Instant,
    kept_alive: Instant,
}

/// Early messages by stream, in version order (then stream sequence, for redelivered copies).
#[derive(Default)]
struct Parked {
    streams: HashMap<String, BTreeMap<(i64, u64), ParkedMessage>>,
    count: usize,
}

impl Parked {
    fn has_room(&self) -> bool {
        self.count < MAX_PARKED
    }

    fn insert(&mut self, message: jetstream::Message, event: ForeignEvent) {
        let now = Instant::now();
        self.put_back(ParkedMessage {
            message,
            event,
            parked_at: now,
            kept_alive: now,
        });
    }

    /// Takes the earliest parked message of `stream`.
    fn take_first(&mut self, stream: &str) -> Option<ParkedMessage> {
        let messages = self.streams.get_mut(stream)?;
        let (_, first) = messages.pop_first()?;
        if messages.is_empty() {
            self.streams.remove(stream);
        }
        self.count -= 1;
        Some(first)
    }

    /// Parks `parked` (again); a redelivered copy of a parked message replaces it.
    fn put_back(&mut self, parked: ParkedMessage) {
        let sequence = parked
            .message
            .info()
            .map(|i| i.stream_sequence)
            .unwrap_or(0);
        let key = (parked.event.stream_version, sequence);
        let stream = self
            .streams
            .entry(parked.event.stream_id.clone())
            .or_default();
        if stream.insert(key, parked).is_none() {
            self.count += 1;
        }
    }
}

/// The database is unreachable: the message is retried in place, without spending a delivery.
struct Unreachable(String);

/// Why recording an event failed before any outcome was reached.
enum RecordError {
    /// The consumer's own SQL failed.
    Sql(sqlx::Error),
    /// A handler failed because the database is unreachable.
    Unreachable(String),
}

impl From<sqlx::Error> for RecordError {
    fn from(e: sqlx::Error) -> Self {
        RecordError::Sql(e)
    }
}

impl Consumer {
    pub fn new(
        store: EventStore,
        js: async_nats::jetstream::Context,
        config: ConsumerConfig,
        handlers: Vec<Arc<dyn Reaction>>,
    ) -> Self {
        Consumer {
            store,
            js,
            config,
            handlers,
            dead_letters: Arc::default(),
        }
    }

    /// Counts the messages this consumer has dead-lettered; take it before `run`.
    pub fn dead_letter_counter(&self) -> Arc<AtomicU64> {
        self.dead_letters.clone()
    }

    /// Runs until `shutdown`, finishing the message in hand first.
    pub async fn run(self, shutdown: CancellationToken) {
        let span = tracing::info_span!(
            "consumer",
            durable = %self.config.durable,
            stream = %self.config.stream,
        );
        self.run_instrumented(shutdown).instrument(span).await
    }

    async fn run_instrumented(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::default();
        // Parked messages outlive a recreated subscription: their acks go to reply subjects.
        let mut parked = Parked::default();
        while !shutdown.is_cancelled() {
            let consumer = match self.consumer().await {
                Ok(consumer) => consumer,
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "cannot create the JetStream consumer; retrying"
                    );
                    backoff.wait(&shutdown).await;
                    continue;
                }
            };
            let messages = consumer
                .stream()
                .max_messages_per_batch(PULL_BATCH)
                .heartbeat(IDLE_HEARTBEAT)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut messages = match messages {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot pull messages; retrying");
                    backoff.wait(&shutdown).await;
                    continue;
                }
            };
            tracing::info!("consumer started");
            let mut errors = 0;
            let mut retry = tokio::time::interval(PARK_RETRY);
            retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = retry.tick(), if parked.count > 0 => {
                        self.retry_parked(&mut parked, &shutdown).await;
                        continue;
                    }
                    // Something was recorded here or by a replica (LISTEN/NOTIFY): maybe a
                    // parked message's predecessor.
                    _ = self.store.wakeup.local.notified(), if parked.count > 0 => {
                        self.retry_parked(&mut parked, &shutdown).await;
                        continue;
                    }
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        errors = 0;
                        backoff = Backoff::default();
                        self.process(message, &mut parked, &shutdown).await;
                    }
                    Some(Err(e)) => {
                        errors += 1;
                        tracing::warn!(error = %e, "pulling messages failed");
                        if errors >= STREAM_ERRORS_BEFORE_RECREATE
                            || e.kind() == pull::MessagesErrorKind::ConsumerDeleted
                        {
                            break;
                        }
                    }
                    None => break,
                }
            }
            tracing::warn!("recreating the JetStream consumer");
            backoff.wait(&shutdown).await;
        }
    }

    /// The durable pull consumer, creating the stream and the consumer if missing. Only
    /// nats-server 2.9 features: one filter subject, no 2.10+ fields.
    async fn consumer(&self) -> anyhow::Result<jetstream::consumer::PullConsumer> {
        let stream =
            nats::ensure_stream(&self.js, &self.config.stream, &self.config.subject_prefix).await?;
        let config = pull::Config {
            durable_name: Some(self.config.durable.clone()),
            filter_subject: format!("{}.>", self.config.subject_prefix),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_deliver: self.config.max_deliver,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        };
        Ok(stream
            .get_or_create_consumer(&self.config.durable, config)
            .await?)
    }

    /// Handles one message to its end: acked (applied, duplicate or dead-lettered), nak'd
    /// with a delay, or parked until its stream's predecessor is recorded. Only shutdown during
    /// a database outage leaves it to be redelivered.
    async fn process(
        &self,
        message: jetstream::Message,
        parked: &mut Parked,
        shutdown: &CancellationToken,
    ) {
        let event = match decode(&message.message) {
            Ok(event) => event,
            Err(error) => return self.dead_letter(&message, &error, shutdown).await,
        };
        let may_park = parked.has_room();
        match self
            .process_event(&message, &event, may_park, shutdown)
            .instrument(consume_span(&event))
            .await
        {
            Disposition::Park => {
                metrics::consumed(&self.config.durable, "parked");
                parked.insert(message, event);
            }
            Disposition::Done { applied: true } => {
                self.apply_parked(&event.stream_id, parked, shutdown).await;
            }
            Disposition::Done { applied: false } => {}
        }
    }

    /// Applies the parked successors of `stream` that have become next in line.
    async fn apply_parked(&self, stream: &str, parked: &mut Parked, shutdown: &CancellationToken) {
        while let Some(next) = parked.take_first(stream) {
            let disposition = self
                .process_event(&next.message, &next.event, true, shutdown)
                .instrument(consume_span(&next.event))
                .await;
            if let Disposition::Park = disposition {
                parked.put_back(next);
                return;
            }
        }
    }

    /// Retries the head of every parked stream (another replica may have recorded its
    /// predecessor), keeps parked messages from being redelivered, and naks those parked too
    /// long.
    async fn retry_parked(&self, parked: &mut Parked, shutdown: &CancellationToken) {
        let streams: Vec<String> = parked.streams.keys().cloned().collect();
        for stream in streams {
            self.apply_parked(&stream, parked, shutdown).await;
        }
        let mut expired = Vec::new();
        for messages in parked.streams.values_mut() {
            let keys: Vec<(i64, u64)> = messages.keys().copied().collect();
            for key in keys {
                let Some(waiting) = messages.get_mut(&key) else {
                    continue;
                };
                if waiting.parked_at.elapsed() >= PARK_LIMIT {
                    if let Some(waiting) = messages.remove(&key) {
                        expired.push(waiting);
                    }
                } else if waiting.kept_alive.elapsed() >= ACK_WAIT / 3 {
                    let _ = waiting.message.ack_with(AckKind::Progress).await;
                    waiting.kept_alive = Instant::now();
                }
            }
        }
        parked.streams.retain(|_, messages| !messages.is_empty());
        parked.count -= expired.len();
        for waiting in expired {
            // Redelivered later, or dead-lettered on its last delivery.
            self.process_event(&waiting.message, &waiting.event, false, shutdown)
                .instrument(consume_span(&waiting.event))
                .await;
        }
    }

    async fn process_event(
        &self,
        message: &jetstream::Message,
        event: &ForeignEvent,
        may_park: bool,
        shutdown: &CancellationToken,
    ) -> Disposition {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let last_delivery = self.config.max_deliver > 0 && delivered >= self.config.max_deliver;
        let mut backoff = Backoff::default();
        let outcome = loop {
            match self.record(event).await {
                Err(Unreachable(error)) => {
                    // Tell the server we are still working on the message.
                    tracing::warn!(error, "consumer cannot reach the database; retrying");
                    let _ = message.ack_with(AckKind::Progress).await;
                    backoff.wait(shutdown).await;
                    if shutdown.is_cancelled() {
                        let _ = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
                        return Disposition::Done { applied: false };
                    }
                }
                Ok(outcome) => break outcome,
            }
        };
        match outcome {
            Outcome::Applied => {
                metrics::consumed(&self.config.durable, "applied");
                self.ack(message).await;
                self.store.notify_appended();
                tracing::debug!("foreign event applied");
                return Disposition::Done { applied: true };
            }
            Outcome::Duplicate => {
                tracing::debug!("duplicate foreign event acknowledged without effect");
                metrics::consumed(&self.config.durable, "duplicate");
                self.ack(message).await;
            }
            Outcome::Early { recorded } if may_park => {
                tracing::debug!(recorded, "predecessor not recorded yet; parked");
                return Disposition::Park;
            }
            Outcome::Early { recorded } if last_delivery => {
                let error = format!(
                    "version {} of {} arrived, but only version {recorded} was ever recorded",
                    event.stream_version, event.stream_id
                );
                self.dead_letter(message, &error, shutdown).await;
            }
            Outcome::Early { recorded } => {
                tracing::debug!(recorded, "predecessor not recorded yet; redelivering later");
                metrics::consumed(&self.config.durable, "retried");
                self.nak(message).await;
            }
            Outcome::Poison(error) => self.dead_letter(message, &error, shutdown).await,
            Outcome::Transient(error) if last_delivery => {
                let error = format!("still failing after {delivered} deliveries: {error}");
                self.dead_letter(message, &error, shutdown).await;
            }
            Outcome::Transient(error) => {
                tracing::warn!(delivered, error, "handler failed; redelivering later");
                metrics::consumed(&self.config.durable, "retried");
                self.nak(message).await;
            }
        }
        Disposition::Done { applied: false }
    }

    /// Records the event in the inbox and runs every handler, in one transaction that is
    /// committed only if all succeed.
    async fn record(&self, event: &ForeignEvent) -> Result<Outcome, Unreachable> {
        match self.try_record(event).await {
            Ok(outcome) => Ok(outcome),
            Err(RecordError::Unreachable(error)) => Err(Unreachable(error)),
            Err(RecordError::Sql(e)) if is_connection_error(&e) => Err(Unreachable(e.to_string())),
            // Refused by the database for this event: retried like a handler's failure, and
            // dead-lettered once its deliveries run out.
            Err(RecordError::Sql(e)) => {
                Ok(Outcome::Transient(format!("recording in the inbox: {e}")))
            }
        }
    }

    async fn try_record(&self, event: &ForeignEvent) -> Result<Outcome, RecordError> {
        let mut tx = self.store.pool().begin().await?;
        // Serialises consumers (replicas) working on the same stream, so the version check
        // and the insert below cannot interleave.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(STREAM_LOCK_CLASS)
            .bind(&event.stream_id)
            .execute(&mut *tx)
            .await?;
        let known: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM inbox WHERE event_id = $1)")
                .bind(event.event_id)
                .fetch_one(&mut *tx)
                .await?;
        if known {
            return Ok(Outcome::Duplicate);
        }
        let recorded: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(stream_version), 0) FROM inbox WHERE stream_id = $1",
        )
        .bind(&event.stream_id)
        .fetch_one(&mut *tx)
        .await?;
        if event.stream_version <= recorded {
            tracing::warn!(
                recorded,
                "a different event id for an already recorded stream version; skipped"
            );
            return Ok(Outcome::Duplicate);
        }
        if event.stream_version > recorded + 1 {
            return Ok(Outcome::Early { recorded });
        }
        // The inbox row is written last: a transaction gets its id at its first write, and a
        // reaction's append must not carry an id older than the stream's last event (the store
        // refuses such an append as a conflict, see `store::APPEND_SQL`). Writing first would
        // widen that window to the whole handler. The inbox lock is taken before any write,
        // so the catalogue-style handlers and the `seq` drawn below are both under it.
        lock_inbox_shared(&mut tx).await?;
        for handler in &self.handlers {
            match handler.handle(&mut tx, event).await {
                Ok(()) => {}
                Err(HandleError::Poison(reason)) => {
                    return Ok(Outcome::Poison(format!("{}: {reason}", handler.name())))
                }
                Err(HandleError::Transient(e)) => {
                    let error = format!("{}: {e:#}", handler.name());
                    let unreachable = caused_by_unreachable_database(&e);
                    return if unreachable {
                        Err(RecordError::Unreachable(error))
                    } else {
                        Ok(Outcome::Transient(error))
                    };
                }
            }
        }
        insert_inbox(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Outcome::Applied)
    }

    async fn ack(&self, message: &jetstream::Message) {
        if let Err(e) = message.double_ack().await {
            // Committed already: the redelivery will be recognised as a duplicate.
            tracing::warn!(error = %e, "cannot acknowledge; the message will be redelivered");
        }
    }

    async fn nak(&self, message: &jetstream::Message) {
        if let Err(e) = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await {
            tracing::warn!(error = %e, "cannot nak; redelivery waits for ack_wait");
        }
    }

    /// Records the message in `dead_letters`, publishes it to the dead-letter subject with its
    /// error, counts it and acknowledges it. It is acknowledged only once it is recorded.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        error: &str,
        shutdown: &CancellationToken,
    ) {
        let msg = &message.message;
        let sequence = message
            .info()
            .ok()
            .and_then(|i| i64::try_from(i.stream_sequence).ok());
        tracing::error!(subject = %msg.subject, sequence, error, "dead-lettering a message");
        let original = msg.headers.clone().unwrap_or_default();
        let mut backoff = Backoff::default();
        loop {
            let inserted = sqlx::query(
                "INSERT INTO dead_letters \
                     (consumer, subject, stream_sequence, headers, payload, error) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&self.config.durable)
            .bind(msg.subject.as_str())
            .bind(sequence)
            .bind(headers_json(&original))
            .bind(msg.payload.as_ref())
            .bind(error.replace('\0', "\u{fffd}"))
            .execute(self.store.pool())
            .await;
            match inserted {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record a dead letter; retrying");
                    let _ = message.ack_with(AckKind::Progress).await;
                    backoff.wait(shutdown).await;
                    if shutdown.is_cancelled() {
                        return;
                    }
                }
            }
        }
        let mut headers = original;
        headers.insert(dead_letter_headers::ERROR, header_safe(error));
        headers.insert(dead_letter_headers::CONSUMER, self.config.durable.as_str());
        if let Err(e) = self
            .js
            .client()
            .publish_with_headers(
                self.config.dead_letter_subject.clone(),
                headers,
                msg.payload.clone(),
            )
            .await
        {
            tracing::warn!(error = %e, "cannot publish a dead letter (it is in dead_letters)");
        }
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
        metrics::dead_lettered(&self.config.durable);
        metrics::consumed(&self.config.durable, "dead_lettered");
        self.ack(message).await;
    }
}

/// The span of one event's handling: every log line of the handlers names the request that
/// started the saga.
fn consume_span(event: &ForeignEvent) -> tracing::Span {
    tracing::info_span!(
        "consume",
        event_id = %event.event_id,
        stream_id = %event.stream_id,
        version = event.stream_version,
        event_type = %event.event_type,
        correlation_id = event.metadata.correlation_id.as_deref(),
        traceparent = event.metadata.traceparent.as_deref(),
    )
}

/// First key of the per-stream transaction locks (the two-key advisory lock space, apart from
/// the projectors' one-key leadership locks).
const STREAM_LOCK_CLASS: i32 = 0x696e_626f; // "inbo"

/// The inbox lock (two-key advisory lock space, apart from the per-stream locks above).
/// Every transaction that records an event takes it shared before it draws an inbox `seq` and
/// keeps it to its end; a rebuild of a projection of foreign events takes it exclusive
/// ([`lock_inbox_exclusive`]). Holding it exclusive therefore means no recording transaction
/// is in flight: every `seq` drawn so far is committed or rolled back for good, and no handler
/// is writing its projection. That gives `seq` (an identity, visible in commit order, not
/// draw order) a safe horizon, and gives the rebuild its moment to swap tables.
/// See docs/adr/0002-online-rebuild.md.
const INBOX_LOCK_CLASS: i32 = 0x696e_6278; // "inbx"
const INBOX_LOCK_KEY: i32 = 0;

async fn lock_inbox_shared(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
        .bind(INBOX_LOCK_CLASS)
        .bind(INBOX_LOCK_KEY)
        .execute(conn)
        .await?;
    Ok(())
}

/// Waits until no transaction is recording a foreign event, and keeps new ones out until the
/// caller's transaction ends. Keep that transaction short: consumers wait meanwhile.
pub(crate) async fn lock_inbox_exclusive(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(INBOX_LOCK_CLASS)
        .bind(INBOX_LOCK_KEY)
        .execute(conn)
        .await?;
    Ok(())
}

async fn insert_inbox(conn: &mut PgConnection, event: &ForeignEvent) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO inbox (event_id, stream_id, stream_version, event_type, schema_version, \
                            payload, metadata, source_position) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(event.event_id)
    .bind(&event.stream_id)
    .bind(event.stream_version)
    .bind(&event.event_type)
    .bind(event.schema_version)
    .bind(&event.payload)
    .bind(sqlx::types::Json(&event.metadata))
    .bind(event.source_position)
    .execute(conn)
    .await?;
    Ok(())
}

/// Foreign events recorded after `after_seq`, in receipt order, with their `seq`: what a
/// rebuild of a projection of foreign events replays.
pub async fn read_inbox<'e>(
    executor: impl PgExecutor<'e>,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<(i64, ForeignEvent)>, sqlx::Error> {
    read_inbox_range(executor, after_seq, i64::MAX, limit).await
}

/// Like [`read_inbox`], but only rows with `seq <= up_to`.
pub async fn read_inbox_range<'e>(
    executor: impl PgExecutor<'e>,
    after_seq: i64,
    up_to: i64,
    limit: i64,
) -> Result<Vec<(i64, ForeignEvent)>, sqlx::Error> {
    let rows: Vec<InboxRow> = sqlx::query_as(
        "SELECT seq, event_id, stream_id, stream_version, event_type, schema_version, payload, \
                metadata, source_position \
         FROM inbox WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
    )
    .bind(after_seq)
    .bind(up_to)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.seq,
                ForeignEvent {
                    event_id: r.event_id,
                    event_type: r.event_type,
                    stream_id: r.stream_id,
                    stream_version: r.stream_version,
                    source_position: r.source_position,
                    schema_version: r.schema_version,
                    payload: r.payload,
                    metadata: r.metadata.0,
                },
            )
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct InboxRow {
    seq: i64,
    event_id: Uuid,
    stream_id: String,
    stream_version: i64,
    event_type: String,
    schema_version: i32,
    payload: serde_json::Value,
    metadata: sqlx::types::Json<Metadata>,
    source_position: i64,
}

/// Reads a message as published by the other service's relay; any error makes it poison.
pub fn decode(message: &async_nats::Message) -> Result<ForeignEvent, String> {
    let h = message
        .headers
        .as_ref()
        .ok_or_else(|| "the message has no headers".to_owned())?;
    let required = |name: &str| {
        h.get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("header {name} is missing"))
    };
    let number = |name: &str| -> Result<i64, String> {
        let value = required(name)?;
        value
            .parse()
            .map_err(|_| format!("header {name} is not a number: {value:?}"))
    };
    let id = required(async_nats::header::NATS_MESSAGE_ID.as_ref())?;
    let event_id =
        Uuid::parse_str(id).map_err(|e| format!("Nats-Msg-Id {id:?} is not a uuid: {e}"))?;
    let stream_version = number(headers::STREAM_VERSION)?;
    if stream_version < 1 {
        return Err(format!(
            "{} must be 1 or more, not {stream_version}",
            headers::STREAM_VERSION
        ));
    }
    let schema_version = match h.get(headers::SCHEMA_VERSION) {
        None => 1,
        Some(v) => v.as_str().parse().map_err(|_| {
            format!(
                "header {} is not a number: {:?}",
                headers::SCHEMA_VERSION,
                v.as_str()
            )
        })?,
    };
    let metadata = match h.get(headers::METADATA) {
        None => Metadata::default(),
        Some(v) => serde_json::from_str(v.as_str())
            .map_err(|e| format!("header {} is not metadata JSON: {e}", headers::METADATA))?,
    };
    let payload: serde_json::Value = serde_json::from_slice(&message.payload)
        .map_err(|e| format!("the payload is not JSON: {e}"))?;
    let event = ForeignEvent {
        event_id,
        event_type: required(headers::EVENT_TYPE)?.to_owned(),
        stream_id: required(headers::STREAM_ID)?.to_owned(),
        stream_version,
        source_position: number(headers::POSITION)?,
        schema_version,
        payload,
        metadata,
    };
    // Postgres text and jsonb cannot hold NUL: such an event could never be recorded.
    let metadata = serde_json::to_value(&event.metadata).unwrap_or_default();
    if [&event.event_type, &event.stream_id]
        .iter()
        .any(|s| s.contains('\0'))
        || has_nul(&event.payload)
        || has_nul(&metadata)
    {
        return Err("the event contains a NUL character, which Postgres cannot store".to_owned());
    }
    Ok(event)
}

fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Whether a handler's failure comes from the database being unreachable.
fn caused_by_unreachable_database(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
            return is_connection_error(e);
        }
        match cause.downcast_ref::<StoreError>() {
            Some(StoreError::Database(e)) => is_connection_error(e),
            _ => false,
        }
    })
}

/// Errors that say the database is unreachable or overloaded, as opposed to refusing this
/// event: retried in place rather than spending one of the message's deliveries.
fn is_connection_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Connection exceptions, shutdown, insufficient resources, serialization/deadlock.
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            ["08", "57", "53", "40"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        _ => false,
    }
}

/// The headers as a JSON object of name -> list of values.
fn headers_json(headers: &HeaderMap) -> serde_json::Value {
    headers
        .iter()
        .map(|(name, values)| {
            let values: Vec<serde_json::Value> = values
                .iter()
                .map(|v| v.as_str().replace('\0', "\u{fffd}").into())
                .collect();
            (name.to_string(), serde_json::Value::Array(values))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A header value cannot hold line breaks; long errors are cut.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_HEADER)
        .collect()
}
