//! Telling JetStream what became of a message. Acks are fire-and-forget: a message is acked
//! only after its effect committed, so a lost ack costs one redelivery that the inbox
//! recognises as a duplicate, not a second effect; waiting for the server to confirm each
//! (`double_ack`) would add a round trip per message for nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use tokio_util::sync::CancellationToken;

use super::batch::{Committed, Failure, Verdict};
use super::dead_letter::Kind;
use super::parking::Parking;
use super::record::describe;
use super::{Consumer, Delivery, HandleError, ACK_WAIT, PARK_LIMIT};
use crate::metrics;

/// Delay before a nak'd message (predecessor missing, transient failure) is redelivered.
pub(crate) const NAK_DELAY: Duration = Duration::from_secs(1);

pub(crate) async fn ack(message: &jetstream::Message) {
    if let Err(e) = message.ack().await {
        tracing::warn!(error = %e, "cannot acknowledge; the message will be redelivered");
    }
}

/// Hands the message back for redelivery after [`NAK_DELAY`].
pub(crate) async fn nak(message: &jetstream::Message) {
    nak_after(message, NAK_DELAY).await;
}

/// Hands the message back for redelivery after `delay`.
pub(crate) async fn nak_after(message: &jetstream::Message, delay: Duration) {
    if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
        tracing::warn!(error = %e, "cannot nak; redelivery waits for ack_wait");
    }
}

/// Tells the server the message is still being worked on, so it is not redelivered yet.
pub(crate) async fn in_progress(message: &jetstream::Message) {
    let _ = message.ack_with(AckKind::Progress).await;
}

/// What becomes of each message once its batch has committed or failed.
impl Consumer {
    /// Acknowledges, parks or dead-letters each message of a committed batch.
    pub(super) async fn settle(
        &self,
        deliveries: Vec<Delivery>,
        committed: Committed,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) -> HashMap<String, i64> {
        let Committed {
            plan, conflicts, ..
        } = committed;
        let durable = &self.config.durable;
        let mut advanced = HashMap::new();
        for (i, delivery) in deliveries.into_iter().enumerate() {
            match plan.verdicts[i] {
                Verdict::Apply => {
                    metrics::consumed(durable, "applied");
                    ack(&delivery.message).await;
                    let stream = &delivery.event.stream_id;
                    if let Some(version) = plan.recorded.get(stream) {
                        advanced.insert(stream.clone(), *version);
                    }
                }
                Verdict::Duplicate => {
                    metrics::consumed(durable, "duplicate");
                    ack(&delivery.message).await;
                }
                Verdict::Conflict => {
                    let event = &delivery.event;
                    let holder = conflicts
                        .get(&i)
                        .copied()
                        .flatten()
                        .map_or_else(|| "another event".to_owned(), |id| format!("event {id}"));
                    let recorded = conflicts.get(&i).copied().flatten();
                    let verdict = self
                        .which(
                            &event.stream_id,
                            event.stream_version,
                            recorded,
                            event.event_id,
                        )
                        .await;
                    let error = format!(
                        "version {} of {} is already recorded as {holder}; this message carries \
                         event {}; {verdict}",
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
    pub(super) async fn early(
        &self,
        delivery: Delivery,
        recorded: i64,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) {
        let durable = &self.config.durable;
        self.hole(&delivery.event.stream_id, recorded + 1);
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
            self.hole_abandoned(&delivery.event.stream_id);
        } else {
            tracing::debug!(recorded, "predecessor not recorded yet; redelivering later");
            metrics::consumed(durable, "retried");
            nak(&delivery.message).await;
        }
    }

    /// A single message whose transaction was rolled back.
    pub(super) async fn settle_failure(
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
        let newer_schema = matches!(failure, Failure::Handler(_, HandleError::NewerSchema(_)));
        if self.last_delivery(&delivery) {
            let (kind, error) = match newer_schema {
                true => (
                    Kind::NewerSchema,
                    format!(
                        "still unreadable after {} deliveries: {error}",
                        delivery.delivered()
                    ),
                ),
                false => (
                    Kind::Exhausted,
                    format!(
                        "still failing after {} deliveries: {error}",
                        delivery.delivered()
                    ),
                ),
            };
            return self
                .dead_letter(&delivery.message, kind, &error, shutdown)
                .await;
        }
        if newer_schema {
            // A rolling upgrade: the other service already writes a version this one does not
            // read. Held for as long as its deliveries last, slowly, and alerted on.
            tracing::warn!(
                delivered = delivery.delivered(),
                error,
                "an event is newer than this service reads; upgrade it. Redelivering later"
            );
            metrics::consumed(&self.config.durable, "newer_schema");
            return nak_after(&delivery.message, self.config.newer_schema_delay).await;
        }
        tracing::warn!(
            delivered = delivery.delivered(),
            error,
            "handling failed; redelivering later"
        );
        metrics::consumed(&self.config.durable, "retried");
        nak(&delivery.message).await;
    }

    pub(super) fn last_delivery(&self, delivery: &Delivery) -> bool {
        self.config.max_deliver > 0 && delivery.delivered() >= self.config.max_deliver
    }

    /// Hands back messages parked too long, retries the head of every parked stream (another
    /// replica may have recorded its predecessor), and keeps the rest from being redelivered.
    pub(super) async fn retry_parked(
        &self,
        parking: &mut Parking<Delivery>,
        shutdown: &CancellationToken,
    ) {
        let now = Instant::now();
        let expired = parking.take_expired(now, PARK_LIMIT);
        let heads = parking.take_heads();
        for item in parking.keep_alive(now, ACK_WAIT / 3) {
            in_progress(&item.message).await;
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

    pub(super) async fn dead_letter(
        &self,
        message: &jetstream::Message,
        kind: Kind,
        error: &str,
        shutdown: &CancellationToken,
    ) {
        super::dead_letter::dead_letter(
            &self.store,
            &self.js,
            &self.config,
            message,
            kind,
            error,
            shutdown,
        )
        .await;
    }
}
