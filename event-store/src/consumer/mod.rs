//! Consuming the other service's events from JetStream, exactly once in effect.
//!
//! A durable pull consumer (explicit ack, finite max_deliver, one filter subject: nats-server
//! 2.9 compatible) hands over whatever it has ready, up to [`MAX_BATCH`] messages, and the
//! consumer records them in ONE transaction ([`batch`]): each event goes into the inbox (event
//! id unique, so a duplicate is acknowledged without effect forever, not only inside
//! JetStream's window) together with what the service's handlers do with it. Acks follow the
//! commit. Reading this module in order:
//!
//! - [`crate::envelope`]: the message contract, and decoding (a message that does not decode
//!   is poison);
//! - [`batch`]: what becomes of each event of a batch ([`batch::plan`], pure) and the batch's
//!   transaction;
//! - [`parking`]: events that arrived before their stream's predecessor, held unacknowledged
//!   and applied as soon as it is recorded, by this process or a replica; only after
//!   [`PARK_LIMIT`] are they handed back;
//! - [`settle`]: ack, nak, keep-alive; [`dead_letter`]: poison and conflicting events.
//!
//! A handler that fails inside a batch must not cost the others: the batch is rolled back
//! and run again one message at a time, so only the bad message is dead-lettered or
//! retried. A version conflict (the state a reaction decided on changed meanwhile) is retried
//! at once on fresh state, in a new transaction; an unreachable database is retried in place
//! without spending the messages' deliveries.

mod batch;
mod dead_letter;
mod parking;
mod settle;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::batch::{Committed, Failure, Verdict};
use self::dead_letter::Kind;
use self::parking::Parking;
use crate::leader::Backoff;
use crate::{envelope, metrics, nats, EventStore, StoreError};

pub use self::dead_letter::{dead_letter_headers, version_conflicts, Kind as DeadLetterKind};
pub use crate::envelope::{decode, ForeignEvent};
pub use crate::inbox::{read_inbox, read_inbox_range};

/// How long a delivered message stays with this consumer before the server redelivers it: after
/// a crash, in-flight messages wait this long. Short, because a premature redelivery costs
/// nothing (the inbox recognises the duplicate).
pub const ACK_WAIT: Duration = Duration::from_secs(5);
/// How long a message may wait parked for its stream's predecessor before it is nak'd (and,
/// on its last delivery, dead-lettered). Covers a crashed replica's in-flight messages, which
/// come back after `ACK_WAIT`.
pub const PARK_LIMIT: Duration = Duration::from_secs(30);
/// Most messages parked at once; beyond it, early messages are nak'd as a fallback.
const MAX_PARKED: usize = 1000;
/// How often parked messages are retried (a replica may have recorded their predecessor) and
/// kept alive.
const PARK_RETRY: Duration = Duration::from_millis(200);
/// Wake-ups (something was recorded, here or by a replica) retry parked messages at most this
/// often.
const PARK_RETRY_ON_WAKEUP: Duration = Duration::from_millis(20);
/// Most messages recorded in one transaction.
pub const MAX_BATCH: usize = 256;
/// Messages asked for per pull request. The client asks for more when half are consumed, so
/// about this many are ready whenever the consumer starts a batch under load.
pub const PULL_BATCH: usize = 512;
/// Messages delivered and not yet acknowledged, across replicas: pulled, in a batch, or
/// parked. Bounds what a crash hands back after `ACK_WAIT`.
pub const MAX_ACK_PENDING: i64 = 4096;
const IDLE_HEARTBEAT: Duration = Duration::from_secs(5);
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// Consecutive errors from the message stream after which the consumer is recreated.
const STREAM_ERRORS_BEFORE_RECREATE: u32 = 3;
/// Immediate retries of a batch whose reaction met a concurrent write, before the batch is
/// split into single messages (and a single one is nak'd).
const CONFLICT_RETRIES: u32 = 8;

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The event can never be applied (bad payload, broken invariant): dead-letter it.
    #[error("poison message: {0}")]
    Poison(String),
    /// The state the handler decided on changed meanwhile (another writer appended to a
    /// stream it read): decided again at once, on fresh state, in a new transaction.
    #[error("concurrent write: {0}")]
    Conflict(String),
    /// Worth retrying later (database unavailable, a timeout).
    #[error("transient failure: {0}")]
    Transient(#[from] anyhow::Error),
}

impl HandleError {
    /// What a failed append means for the event that caused it: a version conflict is decided
    /// again; a database error is classified by [`HandleError::database`]; anything else (an
    /// invalid stream id or event type, a reused event id) cannot get better by retrying.
    pub fn from_store(error: StoreError, doing: &str) -> HandleError {
        match error {
            e @ StoreError::Conflict { .. } => HandleError::Conflict(format!("{doing}: {e}")),
            StoreError::Database(e) => HandleError::database(e, doing),
            // Applying the just-appended events to a read model failed: worth retrying (a
            // database that went away), and dead-lettered once deliveries run out.
            e @ StoreError::Projection { .. } => {
                HandleError::Transient(anyhow::Error::new(e).context(doing.to_owned()))
            }
            other => HandleError::Poison(format!("{doing}: {other}")),
        }
    }

    /// A database error while handling an event: a data exception (SQLSTATE class 22, such as
    /// a NUL character in a text) fails the same way on every delivery, so it is poison; a
    /// serialization failure, deadlock or unique violation is a race, decided again; all else
    /// (connections, timeouts) is worth retrying later.
    pub fn database(error: sqlx::Error, doing: &str) -> HandleError {
        match sqlstate(&error).as_deref() {
            Some(code) if code.starts_with("22") => {
                HandleError::Poison(format!("{doing}: {error}"))
            }
            Some(code) if is_race(code) => HandleError::Conflict(format!("{doing}: {error}")),
            _ => HandleError::Transient(anyhow::Error::new(error).context(doing.to_owned())),
        }
    }
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

    /// Handles a batch of events, in the order given (within a stream, version order), with
    /// the same effect as [`Reaction::handle`] on each in turn. Override it to work
    /// set-based: one read and one write per batch instead of per event. An error fails the
    /// whole batch; the consumer then runs it again one event at a time.
    fn handle_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a ForeignEvent],
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            for event in events {
                self.handle(&mut *tx, event)
                    .instrument(consume_span(event))
                    .await?;
            }
            Ok(())
        })
    }
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

/// A decoded message on its way through the consumer.
struct Delivery {
    message: jetstream::Message,
    event: ForeignEvent,
    /// When it was first parked, if it was.
    parked_at: Option<Instant>,
    /// False once it has waited parked for [`PARK_LIMIT`]: it is handed back if still early.
    may_park: bool,
}

impl Delivery {
    fn delivered(&self) -> i64 {
        self.message.info().map(|i| i.delivered).unwrap_or(1)
    }

    fn sequence(&self) -> u64 {
        self.message.info().map(|i| i.stream_sequence).unwrap_or(0)
    }
}

/// How recording a batch ended, after the retries in place.
enum Recorded {
    Committed(Committed),
    /// Rolled back by a handler's failure or the consumer's own SQL.
    Failed(Failure),
    /// Shut down while the database was unreachable: nothing was recorded.
    Stopped,
}

/// How a batch's failure is retried.
enum Retry {
    /// The database is unreachable: wait and retry in place, spending no delivery.
    Unreachable(String),
    /// A concurrent write: retry at once on fresh state.
    Race(String),
    /// Split the batch, or settle the single message.
    No,
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

    /// Runs until `shutdown`, finishing the batch in hand first.
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
        let mut parking: Parking<Delivery> = Parking::new(MAX_PARKED);
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
            let mut last_retry = Instant::now();
            loop {
                let first = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = retry.tick(), if !parking.is_empty() => {
                        self.retry_parked(&mut parking, &shutdown).await;
                        last_retry = Instant::now();
                        continue;
                    }
                    // Something was recorded here or by a replica (LISTEN/NOTIFY): maybe a
                    // parked message's predecessor.
                    _ = self.store.wakeup.local.notified(), if !parking.is_empty()
                        && last_retry.elapsed() >= PARK_RETRY_ON_WAKEUP => {
                        self.retry_parked(&mut parking, &shutdown).await;
                        last_retry = Instant::now();
                        continue;
                    }
                    next = messages.next() => next,
                };
                // The first message, then whatever else the subscription has ready: under
                // load, what arrived while the previous batch was being recorded.
                let mut batch = Vec::new();
                let mut next = Some(first);
                let mut broken = false;
                while let Some(item) = next.take() {
                    match item {
                        Some(Ok(message)) => {
                            errors = 0;
                            batch.push(message);
                        }
                        Some(Err(e)) => {
                            errors += 1;
                            tracing::warn!(error = %e, "pulling messages failed");
                            broken = errors >= STREAM_ERRORS_BEFORE_RECREATE
                                || e.kind() == pull::MessagesErrorKind::ConsumerDeleted;
                            break;
                        }
                        None => {
                            broken = true;
                            break;
                        }
                    }
                    if batch.len() < MAX_BATCH {
                        // Outside tokio's cooperative budget: the acks of the last batch spent
                        // it, and a spent budget answers "not ready" though messages are
                        // buffered, which cut batches short (at about 128 messages).
                        next = tokio::task::unconstrained(messages.next()).now_or_never();
                    }
                }
                if !batch.is_empty() {
                    backoff = Backoff::default();
                    self.process(batch, &mut parking, &shutdown).await;
                }
                if broken {
                    break;
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
            max_ack_pending: MAX_ACK_PENDING,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        };
        Ok(stream
            .get_or_create_consumer(&self.config.durable, config)
            .await?)
    }

    /// Decodes a batch (a message that does not decode is dead-lettered) and applies it.
    async fn process(
        &self,
        messages: Vec<jetstream::Message>,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) {
        let mut deliveries = Vec::with_capacity(messages.len());
        for message in messages {
            match envelope::decode(&message.message) {
                Ok(event) => deliveries.push(Delivery {
                    message,
                    event,
                    parked_at: None,
                    may_park: true,
                }),
                Err(error) => {
                    self.dead_letter(&message, Kind::Poison, &error, shutdown)
                        .await
                }
            }
        }
        self.apply(deliveries, parking, shutdown).await;
    }

    /// Records `deliveries`, then the parked messages their commit made next in line, and
    /// so on until nothing more is released.
    async fn apply(
        &self,
        deliveries: Vec<Delivery>,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) {
        let mut pending = deliveries;
        while !pending.is_empty() {
            let (started, messages) = (Instant::now(), pending.len());
            let advanced = self.record_and_settle(pending, parking, shutdown).await;
            metrics::batch_recorded(
                &self.config.durable,
                messages,
                started.elapsed().as_secs_f64(),
            );
            pending = advanced
                .iter()
                .flat_map(|(stream, version)| parking.take_ready(stream, *version))
                .map(|parked| Delivery {
                    parked_at: Some(parked.parked_at),
                    ..parked.item
                })
                .collect();
        }
    }

    /// Records one batch and settles every message of it; a failed batch is run again one
    /// message at a time. Returns the streams whose recorded version advanced, with it.
    async fn record_and_settle(
        &self,
        deliveries: Vec<Delivery>,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) -> HashMap<String, i64> {
        match self.record(&deliveries, shutdown).await {
            Recorded::Committed(committed) => {
                self.settle(deliveries, committed, parking, shutdown).await
            }
            Recorded::Stopped => {
                for delivery in &deliveries {
                    settle::nak(&delivery.message).await;
                }
                HashMap::new()
            }
            Recorded::Failed(failure) if deliveries.len() == 1 => {
                if let Some(delivery) = deliveries.into_iter().next() {
                    self.settle_failure(delivery, failure, shutdown).await;
                }
                HashMap::new()
            }
            Recorded::Failed(failure) => {
                tracing::info!(
                    messages = deliveries.len(),
                    error = %describe(&failure),
                    "batch rolled back; recording its messages one at a time"
                );
                let mut advanced = HashMap::new();
                for delivery in deliveries {
                    let span = consume_span(&delivery.event);
                    let single = match self.record(std::slice::from_ref(&delivery), shutdown).await
                    {
                        Recorded::Committed(committed) => {
                            self.settle(vec![delivery], committed, parking, shutdown)
                                .instrument(span)
                                .await
                        }
                        Recorded::Stopped => {
                            settle::nak(&delivery.message).await;
                            HashMap::new()
                        }
                        Recorded::Failed(failure) => {
                            self.settle_failure(delivery, failure, shutdown)
                                .instrument(span)
                                .await;
                            HashMap::new()
                        }
                    };
                    advanced.extend(single);
                }
                advanced
            }
        }
    }

    /// Runs the batch's transaction, retrying in place while the database is unreachable
    /// (keeping the messages from redelivery) and at once after a race.
    async fn record(&self, deliveries: &[Delivery], shutdown: &CancellationToken) -> Recorded {
        let appends_before = self.store.appends_in_tx();
        let events: Vec<&ForeignEvent> = deliveries.iter().map(|d| &d.event).collect();
        let span = tracing::debug_span!("batch", messages = events.len());
        let mut backoff = Backoff::default();
        let mut races = 0;
        loop {
            let failure = match batch::record(&self.store, &self.handlers, &events)
                .instrument(span.clone())
                .await
            {
                Ok(committed) => {
                    if self.store.appends_in_tx() != appends_before {
                        // The handlers appended events: wake the relay.
                        self.store.notify_appended();
                    } else if !committed.plan.apply.is_empty() {
                        // Recorded only: a replica may hold the successors parked.
                        self.store.wakeup.recorded();
                    }
                    return Recorded::Committed(committed);
                }
                Err(failure) => failure,
            };
            match retry_of(&failure) {
                Retry::Unreachable(error) => {
                    tracing::warn!(error, "consumer cannot reach the database; retrying");
                    for delivery in deliveries {
                        settle::in_progress(&delivery.message).await;
                    }
                    backoff.wait(shutdown).await;
                    if shutdown.is_cancelled() {
                        return Recorded::Stopped;
                    }
                }
                Retry::Race(error) if races < CONFLICT_RETRIES => {
                    races += 1;
                    tracing::debug!(races, error, "a concurrent write; recording again");
                    race_pause(races).await;
                }
                Retry::Race(_) | Retry::No => return Recorded::Failed(failure),
            }
        }
    }

    /// Acknowledges, parks or dead-letters each message of a committed batch.
    async fn settle(
        &self,
        deliveries: Vec<Delivery>,
        committed: Committed,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) -> HashMap<String, i64> {
        let Committed { plan, conflicts } = committed;
        let durable = &self.config.durable;
        let mut advanced = HashMap::new();
        for (i, delivery) in deliveries.into_iter().enumerate() {
            match plan.verdicts[i] {
                Verdict::Apply => {
                    metrics::consumed(durable, "applied");
                    settle::ack(&delivery.message).await;
                    let stream = &delivery.event.stream_id;
                    if let Some(version) = plan.recorded.get(stream) {
                        advanced.insert(stream.clone(), *version);
                    }
                }
                Verdict::Duplicate => {
                    metrics::consumed(durable, "duplicate");
                    settle::ack(&delivery.message).await;
                }
                Verdict::Conflict => {
                    let event = &delivery.event;
                    let holder = conflicts
                        .get(&i)
                        .copied()
                        .flatten()
                        .map_or_else(|| "another event".to_owned(), |id| format!("event {id}"));
                    let error = format!(
                        "version {} of {} is already recorded as {holder}; this message carries \
                         event {}",
                        event.stream_version, event.stream_id, event.event_id
                    );
                    self.dead_letter(&delivery.message, Kind::VersionConflict, &error, shutdown)
                        .await;
                }
                Verdict::Early { recorded } => {
                    self.early(delivery, recorded, parking, shutdown).await
                }
            }
        }
        advanced
    }

    /// A message whose stream's predecessor is not recorded yet: parked while there is room
    /// and it has not waited too long; otherwise handed back, or dead-lettered on its last
    /// delivery.
    async fn early(
        &self,
        delivery: Delivery,
        recorded: i64,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) {
        let durable = &self.config.durable;
        if delivery.may_park && parking.has_room() {
            tracing::debug!(recorded, "predecessor not recorded yet; parked");
            metrics::consumed(durable, "parked");
            let since = delivery.parked_at.unwrap_or_else(Instant::now);
            let (stream, version, sequence) = (
                delivery.event.stream_id.clone(),
                delivery.event.stream_version,
                delivery.sequence(),
            );
            parking.park(&stream, version, sequence, delivery, since);
        } else if self.last_delivery(&delivery) {
            let error = format!(
                "version {} of {} arrived, but only version {recorded} was ever recorded",
                delivery.event.stream_version, delivery.event.stream_id
            );
            self.dead_letter(&delivery.message, Kind::OutOfOrder, &error, shutdown)
                .await;
        } else {
            tracing::debug!(recorded, "predecessor not recorded yet; redelivering later");
            metrics::consumed(durable, "retried");
            settle::nak(&delivery.message).await;
        }
    }

    /// A single message whose transaction was rolled back.
    async fn settle_failure(
        &self,
        delivery: Delivery,
        failure: Failure,
        shutdown: &CancellationToken,
    ) {
        let error = describe(&failure);
        if let Failure::Handler(_, HandleError::Poison(_)) = failure {
            return self
                .dead_letter(&delivery.message, Kind::Poison, &error, shutdown)
                .await;
        }
        if self.last_delivery(&delivery) {
            let error = format!(
                "still failing after {} deliveries: {error}",
                delivery.delivered()
            );
            return self
                .dead_letter(&delivery.message, Kind::Exhausted, &error, shutdown)
                .await;
        }
        tracing::warn!(
            delivered = delivery.delivered(),
            error,
            "handling failed; redelivering later"
        );
        metrics::consumed(&self.config.durable, "retried");
        settle::nak(&delivery.message).await;
    }

    fn last_delivery(&self, delivery: &Delivery) -> bool {
        self.config.max_deliver > 0 && delivery.delivered() >= self.config.max_deliver
    }

    /// Hands back messages parked too long, retries the head of every parked stream (another
    /// replica may have recorded its predecessor), and keeps the rest from being redelivered.
    async fn retry_parked(&self, parking: &mut Parking<Delivery>, shutdown: &CancellationToken) {
        let now = Instant::now();
        let expired = parking.take_expired(now, PARK_LIMIT);
        let heads = parking.take_heads();
        for item in parking.keep_alive(now, ACK_WAIT / 3) {
            settle::in_progress(&item.message).await;
        }
        let expired = expired.into_iter().map(|p| Delivery {
            parked_at: Some(p.parked_at),
            may_park: false,
            ..p.item
        });
        let heads = heads.into_iter().map(|p| Delivery {
            parked_at: Some(p.parked_at),
            ..p.item
        });
        self.apply(expired.chain(heads).collect(), parking, shutdown)
            .await;
    }

    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        kind: Kind,
        error: &str,
        shutdown: &CancellationToken,
    ) {
        dead_letter::dead_letter(
            &self.store,
            &self.js,
            &self.config,
            message,
            kind,
            error,
            shutdown,
        )
        .await;
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
    }
}

/// The span of one event's handling: every log line of the handlers names the request that
/// started the saga.
pub fn consume_span(event: &ForeignEvent) -> tracing::Span {
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

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Handler(name, HandleError::Transient(e)) => format!("{name}: {e:#}"),
        Failure::Handler(name, HandleError::Poison(reason)) => format!("{name}: {reason}"),
        Failure::Handler(name, HandleError::Conflict(reason)) => format!("{name}: {reason}"),
        Failure::Sql(e) => format!("recording in the inbox: {e}"),
    }
}

fn retry_of(failure: &Failure) -> Retry {
    match failure {
        Failure::Sql(e) if crate::error::is_unavailable(e) => Retry::Unreachable(e.to_string()),
        Failure::Sql(e) if sqlstate(e).as_deref().is_some_and(is_race) => {
            Retry::Race(e.to_string())
        }
        Failure::Sql(_) => Retry::No,
        Failure::Handler(_, HandleError::Conflict(reason)) => Retry::Race(reason.clone()),
        Failure::Handler(name, HandleError::Transient(e)) if caused_by_unreachable_database(e) => {
            Retry::Unreachable(format!("{name}: {e:#}"))
        }
        Failure::Handler(..) => Retry::No,
    }
}

/// A short, growing, jittered pause between retries of a batch that met a concurrent write,
/// so two writers racing on one stream stop colliding in lockstep.
async fn race_pause(attempt: u32) {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()) % 500)
        .unwrap_or(0);
    let micros = 100 * u64::from(attempt) + jitter;
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Serialization failure, deadlock (class 40) or unique violation (23505): two transactions
/// raced, and doing it again on fresh state settles it.
fn is_race(code: &str) -> bool {
    code.starts_with("40") || code == "23505"
}

/// Whether a handler's failure comes from the database being unreachable.
fn caused_by_unreachable_database(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
            return crate::error::is_unavailable(e);
        }
        match cause.downcast_ref::<StoreError>() {
            Some(StoreError::Database(e)) => crate::error::is_unavailable(e),
            _ => false,
        }
    })
}
