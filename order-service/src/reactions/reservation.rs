//! The order side of the saga: product-service's verdict on an order's stock confirms or rejects
//! the order.
//!
//! Runs inside the consumer's transaction, a batch of verdicts at once: the orders they name
//! are loaded in one query on that transaction's connection, decided in order (each decision
//! seeing the ones before it), and their new events appended with their `orders` rows in one
//! statement ([`BatchAppend`]), so the inbox entries, the orders' events and the read model
//! commit together (once in effect). The same statement writes the catalogue's rows that the
//! batch's product events changed ([`catalog::ROWS`]), which the catalogue projection, run
//! before this reaction, left with the consumer. A concurrent write to an order
//! (a cancellation over HTTP) makes the append conflict; the consumer then decides again at
//! once on fresh state.

use std::collections::{HashMap, HashSet};

use event_store::aggregate::{self, BatchWriter, Loaded};
use event_store::consumer::{BatchReaction, ForeignEvent, HandleError, Reads, Recording};
use event_store::read_model::InlineRow;
use event_store::wire::WireEvent as _;
use event_store::{EventStore, Metadata};
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::commands::OrderCommand;
use crate::domain::order::{self, Order, OrderState};
use crate::domain::product_events::ProductEvent;
use crate::projections::catalog;
use crate::projections::orders::OrdersProjection;

/// Name of the reaction.
pub const NAME: &str = "reservation-outcome";

/// Appends the orders' events with their `orders` rows.
pub struct ReservationOutcome(BatchWriter<Order>);

impl ReservationOutcome {
    pub fn new(store: EventStore) -> Self {
        ReservationOutcome(
            BatchWriter::new(store, vec![InlineRow::of::<OrdersProjection>()])
                .taking_deferred(&[catalog::ROWS]),
        )
    }

    async fn react(
        &self,
        tx: &mut PgConnection,
        incoming: &[&ForeignEvent],
        recording: Option<&Recording<'_>>,
    ) -> Result<(), HandleError> {
        let mut verdicts = Vec::new();
        for event in incoming {
            if let Some(verdict) = verdict(event)? {
                verdicts.push((*event, verdict));
            }
        }
        if verdicts.is_empty() {
            return Ok(());
        }
        let mut seen = HashSet::new();
        let order_ids: Vec<Uuid> = verdicts
            .iter()
            .map(|(_, (order_id, _))| *order_id)
            .filter(|id| seen.insert(*id))
            .collect();
        let preloaded = recording.map(Recording::preloaded);
        let mut orders: HashMap<Uuid, Loaded<OrderState>> =
            aggregate::load_many_from::<Order>(tx, &order_ids, preloaded)
                .await?
                .into_iter()
                .map(|(id, order)| (id, order.loaded))
                .collect();
        let mut batch = self.0.batch();
        for (cause, (order_id, command)) in verdicts {
            let Loaded { state, version } = orders.remove(&order_id).unwrap_or_default();
            // An unknown order or a rejection after a confirmation breaks the contract between
            // the services; retrying cannot help, so the message is dead-lettered for a person
            // to see.
            let events = order::decide(&state, command)
                .map_err(|e| HandleError::Poison(format!("order {order_id}: {e}")))?;
            let next = events.iter().fold(state, order::evolve);
            orders.insert(
                order_id,
                Loaded {
                    state: next,
                    version,
                },
            );
            if events.is_empty() {
                continue;
            }
            tracing::debug!(%order_id, event_type = events[0].event_type(), "order decided");
            let metadata = Metadata::caused_by(&cause.metadata, cause.event_id);
            batch.push::<Order>(order_id, version, &events, &metadata);
        }
        if batch.is_empty() {
            return Ok(());
        }
        for (id, order) in &orders {
            self.0.settle(&mut batch, *id, &order.state);
        }
        self.0
            .write(batch, tx, recording)
            .await
            .map_err(|e| HandleError::from_store(e, "appending to the orders"))?;
        Ok(())
    }
}

/// The command a product-service event means for an order, if any.
fn verdict(incoming: &ForeignEvent) -> Result<Option<(Uuid, OrderCommand)>, HandleError> {
    let decoded = ProductEvent::decode(incoming)?;
    Ok(match decoded {
        Some(ProductEvent::ReservationConfirmed(e)) => Some((e.order_id, OrderCommand::Confirm)),
        Some(ProductEvent::ReservationRejected(e)) => Some((
            e.order_id,
            OrderCommand::Reject {
                reason: e.reason,
                product_id: e.product_id,
            },
        )),
        _ => None,
    })
}

impl BatchReaction for ReservationOutcome {
    const NAME: &'static str = NAME;

    /// Records the batch's inbox rows, when offered, in the statement that appends.
    fn handle_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a ForeignEvent],
        recording: Option<&'a Recording<'a>>,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(self.react(tx, events, recording))
    }

    /// The orders the verdicts name, read with the inbox's answer in the consumer's one read
    /// of the batch.
    fn reads(&self, events: &[&ForeignEvent], reads: &mut Reads) {
        // An event that does not decode declares nothing; `react` refuses it.
        let orders = events.iter().filter_map(|e| verdict(e).ok().flatten());
        reads.aggregates::<Order>(orders.map(|(order_id, _)| order_id));
    }
}
