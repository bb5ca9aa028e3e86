//! The order side of the saga: product-service's verdict on an order's stock confirms or rejects
//! the order.
//!
//! Runs inside the consumer's transaction: the order is loaded on that transaction's connection
//! and its new event appended there, so the inbox entry and the order's event commit together
//! (once in effect). A concurrent write to the order (a cancellation over HTTP) makes the append
//! conflict; the consumer then retries the message later and the decision is taken again.

use anyhow::anyhow;
use event_store::consumer::{ForeignEvent, HandleError, Reaction};
use event_store::{EventStore, ExpectedVersion, Metadata, StoreError, StreamAppend};
use futures::future::BoxFuture;
use sqlx::PgConnection;

use crate::commands::to_new_events;
use crate::domain::commands::OrderCommand;
use crate::domain::events::OrderEvent;
use crate::domain::order::{self, OrderState};
use crate::domain::product_events::ProductEvent;

/// Name of the reaction.
pub const NAME: &str = "reservation-outcome";

pub struct ReservationOutcome {
    store: EventStore,
}

impl ReservationOutcome {
    pub fn new(store: EventStore) -> Self {
        ReservationOutcome { store }
    }

    #[tracing::instrument(skip_all, fields(event_id = %incoming.event_id, event_type = %incoming.event_type))]
    async fn react(
        &self,
        tx: &mut PgConnection,
        incoming: &ForeignEvent,
    ) -> Result<(), HandleError> {
        let decoded =
            ProductEvent::from_stored(&incoming.event_type, &incoming.payload).map_err(|e| {
                HandleError::Poison(format!(
                    "{} payload does not decode: {e}",
                    incoming.event_type
                ))
            })?;
        let (order_id, command) = match decoded {
            Some(ProductEvent::ReservationConfirmed(e)) => (e.order_id, OrderCommand::Confirm),
            Some(ProductEvent::ReservationRejected(e)) => (
                e.order_id,
                OrderCommand::Reject {
                    reason: e.reason,
                    product_id: e.product_id,
                },
            ),
            _ => return Ok(()),
        };
        let stream = order::stream_id(order_id);
        let (state, version) = load(tx, &stream).await?;
        // An unknown order or a rejection after a confirmation breaks the contract between the
        // services; retrying cannot help, so the message is dead-lettered for a person to see.
        let events = order::decide(&state, command)
            .map_err(|e| HandleError::Poison(format!("order {order_id}: {e}")))?;
        if events.is_empty() {
            return Ok(());
        }
        let metadata = Metadata {
            correlation_id: incoming.metadata.correlation_id.clone(),
            causation_id: Some(incoming.event_id.to_string()),
            traceparent: incoming.metadata.traceparent.clone(),
        };
        let append = StreamAppend {
            stream_id: stream,
            expected: ExpectedVersion::Exact(version),
            events: to_new_events(&events, &metadata),
        };
        match self.store.append_in_tx(tx, &[append]).await {
            Ok(_) => {
                tracing::info!(%order_id, event_type = events[0].event_type(), "order decided");
                Ok(())
            }
            Err(e @ StoreError::Conflict { .. }) => Err(HandleError::Transient(anyhow!(e))),
            Err(StoreError::Database(e)) => Err(super::database_error(e, "appending to the order")),
            Err(other) => Err(HandleError::Poison(format!("order {order_id}: {other}"))),
        }
    }
}

impl Reaction for ReservationOutcome {
    fn name(&self) -> &str {
        NAME
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ForeignEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(self.react(tx, event))
    }
}

/// The order folded from its stream as the transaction sees it, and the stream's version.
async fn load(tx: &mut PgConnection, stream: &str) -> Result<(OrderState, i64), HandleError> {
    let rows: Vec<(i64, String, serde_json::Value)> = sqlx::query_as(
        "SELECT stream_version, event_type, payload FROM events \
         WHERE stream_id = $1 ORDER BY stream_version",
    )
    .bind(stream)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| super::database_error(e, "loading the order"))?;
    let mut state = OrderState::default();
    let mut version = 0;
    for (stream_version, event_type, payload) in rows {
        let event = OrderEvent::from_stored(&event_type, &payload).map_err(|e| {
            HandleError::Poison(format!(
                "{stream} version {stream_version} ({event_type}): {e}"
            ))
        })?;
        if let Some(event) = event {
            state = order::evolve(state, &event);
        }
        version = stream_version;
    }
    Ok((state, version))
}
