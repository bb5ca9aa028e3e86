//! Consuming the other service's events from JetStream, exactly once in effect.
//!
//! A durable pull consumer (explicit ack, finite max_deliver, one filter subject: nats-server
//! 2.9 compatible) hands over whatever it has ready, up to [`MAX_BATCH`] messages, and the
//! consumer records them in ONE transaction ([`batch`]): each event goes into the inbox (event
//! id unique, so a duplicate is acknowledged without effect forever, not only inside
//! JetStream's window) together with what the service's handlers do with it. Acks follow the
//! commit. A batch is recorded on a task of its own: once it is committing, the next batch's
//! transaction begins, so the two overlap by the first one's commit (its WAL flush) and acks;
//! the next queues behind it on every stream they share, so per-stream order holds. Reading
//! this module in order:
//!
//! - [`crate::envelope`]: the message contract, and decoding (a message that does not decode
//!   is poison);
//! - [`batch`]: the verdict on each event of a batch ([`batch::plan`], pure), the batch's
//!   transaction, and its retries in place (unreachable database, a race);
//! - [`fate`]: what becomes of each message once its batch committed or failed, decided in one
//!   place (pure), and carried out in one place, [`Consumer::carry_out`];
//! - [`parking`]: events that arrived before their stream's predecessor, held unacknowledged
//!   and applied as soon as it is recorded, by this process or a replica; only after
//!   [`PARK_LIMIT`] are they handed back;
//! - [`dead_letter`]: poison and conflicting events, recorded and published;
//! - [`reaction`]: what a service plugs in ([`Reaction`], [`HandleError`]);
//! - [`repair`]: holes and watermarks noticed, and the producer asked to send events again.
//!
//! A handler that fails inside a batch must not cost the others: the batch is rolled back
//! and run again one message at a time, so only the bad message is dead-lettered or
//! retried. A version conflict (the state a reaction decided on changed meanwhile) is retried
//! at once on fresh state, in a new transaction; an unreachable database is retried in place
//! without spending the messages' deliveries.

mod batch;
mod dead_letter;
mod fate;
mod parking;
mod reaction;
mod repair;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::batch::{Committed, Recorded};
use self::dead_letter::Kind;
use self::fate::{Facts, Fate, Later, NAK_DELAY};
use self::parking::Parking;
use self::repair::Repairs;
use crate::repair::{watermark_subject, Gaps, Watermark};
use crate::retry::Backoff;
use crate::{envelope, metrics, nats, EventStore};

pub use self::dead_letter::{dead_letter_headers, version_conflicts, Kind as DeadLetterKind};
pub use self::reaction::{consume_span, BatchReaction, HandleError, Reaction};
pub use crate::envelope::{decode, ForeignEvent};
pub use crate::inbox::Recording;
pub use crate::preload::{Preloaded, Reads};

/// How long a delivered message stays with this consumer before the server redelivers it: after
/// a crash, in-flight messages wait this long. Short, because a premature redelivery costs
/// nothing (the inbox recognises the duplicate).
pub const ACK_WAIT: Duration = Duration::from_secs(5);
/// How long a message may wait parked for its stream's predecessor before it is nak'd (and,
/// on its last delivery, dead-lettered). Covers a crashed replica's in-flight messages, which
/// come back after `ACK_WAIT`.
pub const PARK_LIMIT: Duration = Duration::from_secs(30);
/// The default [`ConsumerConfig::newer_schema_delay`]: with 10 deliveries, five minutes for
/// a rolling upgrade.
pub const NEWER_SCHEMA_DELAY: Duration = Duration::from_secs(30);
/// How often open gaps are looked at for requests due.
const GAP_TICK: Duration = Duration::from_millis(250);
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
/// The server sends a heartbeat this often while a pull request is open and idle; two
/// missed mean the request is gone (see [`quiet_pull`]).
const IDLE_HEARTBEAT: Duration = Duration::from_secs(1);
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// Consecutive errors from the message stream after which the consumer is recreated.
const STREAM_ERRORS_BEFORE_RECREATE: u32 = 3;

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
    /// How long a message of a newer schema than this service reads waits before each
    /// redelivery; with `max_deliver`, how long a rolling upgrade may take before it is
    /// dead-lettered ([`NEWER_SCHEMA_DELAY`] by default).
    pub newer_schema_delay: Duration,
    /// Copies of the stream when the consumer has to create it (the producer's relay decides
    /// an existing stream's count); the durable consumer inherits the stream's.
    pub replicas: usize,
}

pub struct Consumer {
    store: EventStore,
    js: async_nats::jetstream::Context,
    config: ConsumerConfig,
    handlers: Arc<[Arc<dyn Reaction>]>,
    repairs: Repairs,
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

    fn position(&self) -> fate::Event<'_> {
        fate::Event {
            stream: &self.event.stream_id,
            version: self.event.stream_version,
        }
    }
}

/// A batch recorded on a task of its own ([`Consumer::start`]).
struct InFlight {
    /// Answers once the batch's transaction is committing, or has ended without a commit.
    committing: Option<tokio::sync::oneshot::Receiver<()>>,
    task: tokio::task::JoinHandle<(Vec<Delivery>, Recorded)>,
    started: Instant,
    messages: usize,
}

impl InFlight {
    /// Returns once the batch's transaction is committing (or ended without a commit).
    async fn committing(&mut self) {
        if let Some(receiver) = self.committing.take() {
            let _ = receiver.await;
        }
    }

    /// The batch's messages and how recording them ended; `None` if the task panicked.
    async fn done(&mut self) -> Option<(Vec<Delivery>, Recorded)> {
        match (&mut self.task).await {
            Ok(done) => Some(done),
            Err(e) => {
                tracing::error!(error = %e, "recording a batch failed on its task");
                None
            }
        }
    }
}

impl Consumer {
    pub fn new(
        store: EventStore,
        js: async_nats::jetstream::Context,
        config: ConsumerConfig,
        handlers: Vec<Arc<dyn Reaction>>,
    ) -> Self {
        let repairs = Repairs::new(js.clone(), store.pool().clone(), &config.subject_prefix);
        Consumer {
            store,
            js,
            config,
            handlers: handlers.into(),
            repairs,
        }
    }

    /// Records gaps in `gaps`, a book the service's readiness reads too.
    pub fn with_gaps(mut self, gaps: Gaps) -> Self {
        self.repairs.gaps = gaps;
        self
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
        let mut declared = false;
        while !shutdown.is_cancelled() {
            let consumer = match self.consumer(declared).await {
                Ok(consumer) => {
                    declared = true;
                    consumer
                }
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
            let watermark_subject = watermark_subject(&self.config.subject_prefix);
            let mut watermarks = match self.js.client().subscribe(watermark_subject).await {
                Ok(subscription) => Some(subscription),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow the producer's watermark");
                    None
                }
            };
            let mut asks = tokio::time::interval(GAP_TICK);
            asks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut errors = 0;
            let mut retry = tokio::time::interval(PARK_RETRY);
            retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_retry = Instant::now();
            // The batch whose transaction is running while the next is gathered.
            let mut in_flight: Option<InFlight> = None;
            loop {
                let first = tokio::select! {
                    _ = shutdown.cancelled() => {
                        self.finish(in_flight.take(), &mut parking, &shutdown).await;
                        return;
                    }
                    recorded = async { in_flight.as_mut().expect("enabled if some").done().await },
                        if in_flight.is_some() => {
                        let batch = in_flight.take().expect("enabled if some");
                        self.settle_in_flight(batch, recorded, &mut parking, &shutdown).await;
                        continue;
                    }
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
                    _ = asks.tick(), if !self.repairs.gaps.is_empty() => {
                        self.repairs.ask_for_gaps().await;
                        continue;
                    }
                    Some(message) = next_watermark(&mut watermarks) => {
                        match serde_json::from_slice::<Watermark>(&message.payload) {
                            Ok(watermark) => self.repairs.check_watermark(watermark, &consumer).await,
                            Err(e) => tracing::debug!(error = %e, "not a watermark"),
                        }
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
                            broken = match quiet_pull(e.kind()) {
                                Some(reason) => {
                                    metrics::repulled(&self.config.durable, reason);
                                    true
                                }
                                None => {
                                    errors >= STREAM_ERRORS_BEFORE_RECREATE
                                        || e.kind() == pull::MessagesErrorKind::ConsumerDeleted
                                }
                            };
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
                    backoff.reset();
                    let deliveries = self.decode(batch, &shutdown).await;
                    if !deliveries.is_empty() {
                        // Begun once the batch in flight is committing (holding its locks until
                        // its commit ends), this batch's transaction queues behind that one on
                        // every stream they share, so each stream is still recorded in
                        // delivery order.
                        if let Some(earlier) = in_flight.as_mut() {
                            earlier.committing().await;
                        }
                        let next = self.start(deliveries, &shutdown);
                        let earlier = in_flight.replace(next);
                        self.finish(earlier, &mut parking, &shutdown).await;
                    }
                }
                if broken {
                    self.finish(in_flight.take(), &mut parking, &shutdown).await;
                    break;
                }
            }
            tracing::warn!("recreating the JetStream consumer");
            backoff.wait(&shutdown).await;
        }
    }

    /// The durable pull consumer. After the first time it is looked up with one request
    /// (after a leader change it is there: declaring the stream again would only add
    /// requests that wait out an election); only when the server says the stream or the
    /// consumer is missing are they declared, as the first time.
    async fn consumer(&self, declared: bool) -> anyhow::Result<jetstream::consumer::PullConsumer> {
        if declared {
            let found = self
                .js
                .get_consumer_from_stream(&self.config.durable, &self.config.stream)
                .await;
            match found {
                Ok(consumer) => return Ok(consumer),
                // Declaring a stream while its deletion runs can leave it without a store.
                Err(e) if is_missing(&e) => tokio::time::sleep(nats::REDECLARE_AFTER).await,
                Err(e) => return Err(e.into()),
            }
        }
        self.declare_consumer().await
    }

    /// Creates the stream and the durable pull consumer if missing. Only nats-server 2.9
    /// features: one filter subject, no 2.10+ fields.
    async fn declare_consumer(&self) -> anyhow::Result<jetstream::consumer::PullConsumer> {
        let (name, prefix) = (&self.config.stream, &self.config.subject_prefix);
        let replicas = self.config.replicas;
        let stream =
            nats::declare_stream(&self.js, name, prefix, replicas, nats::Declare::Other).await?;
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

    /// Decodes a batch; a message that does not decode is dead-lettered.
    async fn decode(
        &self,
        messages: Vec<jetstream::Message>,
        shutdown: &CancellationToken,
    ) -> Vec<Delivery> {
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
        deliveries
    }

    /// Starts recording `deliveries` on a task of its own, so that the consumer gathers the
    /// next batch meanwhile and begins its transaction while this one commits: a batch's
    /// commit (its WAL flush) and the acks that follow it no longer hold up the next. At
    /// most two batches are in flight: the consumer settles this one
    /// ([`Consumer::finish`]) before it starts a third.
    fn start(&self, deliveries: Vec<Delivery>, shutdown: &CancellationToken) -> InFlight {
        let (committing, committed) = tokio::sync::oneshot::channel();
        let (store, handlers) = (self.store.clone(), self.handlers.clone());
        let shutdown = shutdown.clone();
        let messages = deliveries.len();
        let task = tokio::spawn(
            async move {
                let mut committing = Some(committing);
                let recorded = batch::record_retrying(
                    &store,
                    &handlers,
                    &deliveries,
                    &shutdown,
                    &mut committing,
                )
                .await;
                (deliveries, recorded)
            }
            .in_current_span(),
        );
        InFlight {
            committing: Some(committed),
            task,
            started: Instant::now(),
            messages,
        }
    }

    /// Waits for the batch in flight, if any, and settles it.
    async fn finish(
        &self,
        in_flight: Option<InFlight>,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) {
        if let Some(mut batch) = in_flight {
            let recorded = batch.done().await;
            self.settle_in_flight(batch, recorded, parking, shutdown)
                .await;
        }
    }

    /// Settles a batch recorded on its own task, then records the parked messages its commit
    /// made next in line ([`Consumer::apply`]).
    async fn settle_in_flight(
        &self,
        batch: InFlight,
        recorded: Option<(Vec<Delivery>, Recorded)>,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) {
        // A task that panicked took its messages with it: unacknowledged, they come back
        // after `ACK_WAIT`, and the inbox recognises any it had recorded.
        let Some((deliveries, recorded)) = recorded else {
            return;
        };
        let advanced = self
            .settle_recorded(deliveries, recorded, parking, shutdown)
            .await;
        let released = self.settled(&advanced, batch.messages, batch.started, parking);
        self.apply(released, parking, shutdown).await;
    }

    /// What follows a settled batch of `messages` started at `started`: the repairs learn
    /// which streams advanced (`advanced`), the batch is counted, and the parked messages it
    /// made next in line are returned.
    fn settled(
        &self,
        advanced: &HashMap<String, i64>,
        messages: usize,
        started: Instant,
        parking: &mut Parking<Delivery>,
    ) -> Vec<Delivery> {
        self.repairs.recorded(advanced);
        metrics::batch_recorded(
            &self.config.durable,
            messages,
            started.elapsed().as_secs_f64(),
        );
        advanced
            .iter()
            .flat_map(|(stream, version)| parking.take_ready(stream, *version))
            .map(|parked| Delivery {
                parked_at: Some(parked.parked_at),
                ..parked.item
            })
            .collect()
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
            pending = self.settled(&advanced, messages, started, parking);
        }
    }

    /// Records one batch here, not on a task of its own, and settles it
    /// ([`Consumer::settle_recorded`]). Returns the streams whose recorded version advanced.
    async fn record_and_settle(
        &self,
        deliveries: Vec<Delivery>,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) -> HashMap<String, i64> {
        let recorded = batch::record_retrying(
            &self.store,
            &self.handlers,
            &deliveries,
            shutdown,
            &mut None,
        )
        .await;
        self.settle_recorded(deliveries, recorded, parking, shutdown)
            .await
    }

    /// Settles every message of a recorded batch; a batch that rolled back is recorded again
    /// one message at a time, so only the bad message meets its failure. Returns the streams
    /// whose recorded version advanced, with it.
    async fn settle_recorded(
        &self,
        deliveries: Vec<Delivery>,
        recorded: Recorded,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) -> HashMap<String, i64> {
        let store = &self.store;
        match recorded {
            Recorded::Failed(failure) if deliveries.len() > 1 => {
                tracing::info!(
                    messages = deliveries.len(),
                    error = %fate::describe(&failure),
                    "batch rolled back; recording its messages one at a time"
                );
                let mut advanced = HashMap::new();
                for delivery in deliveries {
                    let span = consume_span(&delivery.event);
                    let one = std::slice::from_ref(&delivery);
                    let recorded =
                        batch::record_retrying(store, &self.handlers, one, shutdown, &mut None)
                            .instrument(span.clone())
                            .await;
                    let settled = self.settle(vec![delivery], recorded, parking, shutdown);
                    advanced.extend(settled.instrument(span).await);
                }
                advanced
            }
            recorded => self.settle(deliveries, recorded, parking, shutdown).await,
        }
    }

    /// Decides each message's [`Fate`] from how its batch ended, and carries it out. Returns
    /// the streams whose recorded version advanced, with it.
    async fn settle(
        &self,
        deliveries: Vec<Delivery>,
        recorded: Recorded,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) -> HashMap<String, i64> {
        let mut advanced = HashMap::new();
        for (i, delivery) in deliveries.into_iter().enumerate() {
            let facts = self.facts(&delivery, parking);
            let fate = match &recorded {
                Recorded::Committed(Committed {
                    plan, conflicts, ..
                }) => {
                    let holder = conflicts.get(&i).copied().flatten();
                    let fate =
                        Fate::committed(plan.verdicts[i], holder, delivery.position(), facts);
                    if fate == Fate::Applied {
                        let stream = &delivery.event.stream_id;
                        if let Some(version) = plan.recorded.get(stream) {
                            advanced.insert(stream.clone(), *version);
                        }
                    }
                    fate
                }
                Recorded::Failed(failure) => Fate::failed(failure, facts),
                Recorded::Stopped => Fate::RetryLater {
                    delay: NAK_DELAY,
                    why: Later::ShuttingDown,
                },
            };
            self.carry_out(delivery, fate, parking, shutdown).await;
        }
        advanced
    }

    /// What deciding a message's fate needs to know about the message.
    fn facts(&self, delivery: &Delivery, parking: &Parking<Delivery>) -> Facts {
        let delivered = delivery.delivered();
        Facts {
            delivered,
            last_delivery: self.config.max_deliver > 0 && delivered >= self.config.max_deliver,
            may_park: delivery.may_park && parking.has_room(),
            newer_schema_delay: self.config.newer_schema_delay,
        }
    }

    /// Carries out a message's fate: the one place a message is acknowledged, parked, handed
    /// back or dead-lettered, and counted as such.
    async fn carry_out(
        &self,
        delivery: Delivery,
        fate: Fate,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) {
        let durable = &self.config.durable;
        let event = &delivery.event;
        match fate {
            Fate::Applied => {
                metrics::consumed(durable, "applied");
                fate::ack(&delivery.message).await;
            }
            Fate::Duplicate => {
                metrics::consumed(durable, "duplicate");
                fate::ack(&delivery.message).await;
            }
            Fate::Park { recorded } => {
                self.repairs.hole(&event.stream_id, recorded + 1);
                tracing::debug!(recorded, "predecessor not recorded yet; parked");
                metrics::consumed(durable, "parked");
                let since = delivery.parked_at.unwrap_or_else(Instant::now);
                let (stream, version) = (event.stream_id.clone(), event.stream_version);
                parking.park(&stream, version, delivery.sequence(), delivery, since);
            }
            Fate::RetryLater { delay, why } => {
                let delivered = delivery.delivered();
                match &why {
                    Later::Early { recorded } => {
                        self.repairs.hole(&event.stream_id, recorded + 1);
                        tracing::debug!(
                            recorded,
                            "predecessor not recorded yet; redelivering later"
                        );
                    }
                    Later::Failed(error) => {
                        tracing::warn!(delivered, error, "handling failed; redelivering later");
                    }
                    // A rolling upgrade: the other service already writes a version this one
                    // does not read. Held for as long as its deliveries last, slowly, and
                    // alerted on.
                    Later::NewerSchema(error) => tracing::warn!(
                        delivered,
                        error,
                        "an event is newer than this service reads; upgrade it. Redelivering later"
                    ),
                    Later::ShuttingDown => {}
                }
                if let Some(outcome) = why.outcome() {
                    metrics::consumed(durable, outcome);
                }
                fate::nak_after(&delivery.message, delay).await;
            }
            Fate::DeadLetter { kind, error } => {
                self.dead_letter(&delivery.message, kind, &error, shutdown)
                    .await;
                if kind == Kind::OutOfOrder {
                    // Nothing waits for the hole's predecessor any more.
                    self.repairs.hole_abandoned(&event.stream_id);
                }
            }
            Fate::Conflict { holder } => {
                let (stream, version) = (&event.stream_id, event.stream_version);
                let producer = self
                    .repairs
                    .which(stream, version, holder, event.event_id)
                    .await;
                let holder =
                    holder.map_or_else(|| "another event".to_owned(), |id| format!("event {id}"));
                let error = format!(
                    "version {version} of {stream} is already recorded as {holder}; this message \
                     carries event {}; {producer}",
                    event.event_id
                );
                self.dead_letter(&delivery.message, Kind::VersionConflict, &error, shutdown)
                    .await;
            }
        }
    }

    /// Hands back messages parked too long, retries the head of every parked stream (another
    /// replica may have recorded its predecessor), and keeps the rest from being redelivered.
    async fn retry_parked(&self, parking: &mut Parking<Delivery>, shutdown: &CancellationToken) {
        let now = Instant::now();
        let expired = parking.take_expired(now, PARK_LIMIT);
        let heads = parking.take_heads();
        for item in parking.keep_alive(now, ACK_WAIT / 3) {
            fate::in_progress(&item.message).await;
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
        let (store, js, config) = (&self.store, &self.js, &self.config);
        dead_letter::dead_letter(store, js, config, message, kind, error, shutdown).await;
    }
}

/// Why a pull that went quiet is started afresh at once rather than waited out, if it did.
///
/// On a cluster a consumer's leader can change (its node killed, cut off, or stepping down).
/// The new leader does not know the pull requests the old one held: the client is told with a
/// 409 "Leadership Change" when it is lucky and not at all when the old node died. A client
/// that still counts those requests as open waits for messages that never come until the
/// requests expire (nats.go#2063 stalled for good). So the heartbeats missed while a pull is
/// open ([`IDLE_HEARTBEAT`], two in a row) and a 503 "no responders" (no leader yet) end
/// the subscription, and the consumer pulls again from the new leader after the first
/// backoff step. Messages delivered under the old leader and not yet acknowledged come back
/// after `ACK_WAIT`; the inbox drops them if their first delivery was recorded.
fn quiet_pull(kind: pull::MessagesErrorKind) -> Option<&'static str> {
    match kind {
        pull::MessagesErrorKind::MissingHeartbeat => Some("missed_heartbeat"),
        pull::MessagesErrorKind::NoResponders => Some("no_responders"),
        _ => None,
    }
}

/// Whether the server says the consumer or its stream does not exist (rather than not
/// answering, as during an election).
fn is_missing(error: &jetstream::stream::ConsumerError) -> bool {
    matches!(
        error.kind(),
        jetstream::stream::ConsumerErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
                || e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// The next watermark announced, or never when the subscription could not be made.
async fn next_watermark(
    watermarks: &mut Option<async_nats::Subscriber>,
) -> Option<async_nats::Message> {
    match watermarks {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}
