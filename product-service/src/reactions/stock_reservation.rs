//! The saga step of product-service: `OrderPlaced` reserves stock for every line or none,
//! `OrderCancelled` gives it back.
//!
//! Every stream the decision read is appended with the version it was read at, in one
//! `append_in_tx`: if any product changed in between (another order, a restock), the whole
//! append conflicts, the consumer rolls back and redelivers, and the decision is taken again on
//! fresh state. So stock never goes negative, however many orders race.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use anyhow::Context as _;
use event_store::consumer::{ForeignEvent, HandleError, Reaction};
use event_store::{EventStore, Metadata, StoreError, StreamAppend};
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::commands::new_event;
use crate::domain::order_events::{OrderCancelled, OrderEvent, OrderPlaced};
use crate::domain::product::{self, ProductState};
use crate::domain::reservation::{self, ReservationState, SagaDecision};
use crate::streams::{fold_product, fold_reservation, read_stream_on, Loaded};

pub const NAME: &str = "stock-reservation";

pub struct StockReservation {
    store: EventStore,
}

impl StockReservation {
    pub fn new(store: EventStore) -> Self {
        StockReservation { store }
    }
}

impl Reaction for StockReservation {
    fn name(&self) -> &str {
        NAME
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ForeignEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let decoded = OrderEvent::from_stored(&event.event_type, &event.payload)
                .map_err(|e| HandleError::Poison(format!("{}: {e}", event.event_type)))?;
            match decoded {
                Some(OrderEvent::OrderPlaced(placed)) => self.reserve(tx, event, &placed).await,
                Some(OrderEvent::OrderCancelled(cancelled)) => {
                    self.release(tx, event, &cancelled).await
                }
                None => Ok(()),
            }
        })
    }
}

impl StockReservation {
    #[tracing::instrument(skip_all, fields(order_id = %placed.order_id))]
    async fn reserve(
        &self,
        tx: &mut PgConnection,
        cause: &ForeignEvent,
        placed: &OrderPlaced,
    ) -> Result<(), HandleError> {
        let reservation = load_reservation(tx, placed.order_id).await?;
        let mut products: HashMap<Uuid, Loaded<ProductState>> = HashMap::new();
        for line in &placed.lines {
            if let Entry::Vacant(slot) = products.entry(line.product_id) {
                slot.insert(load_product(tx, line.product_id).await?);
            }
        }
        let states = products
            .iter()
            .map(|(id, loaded)| (*id, loaded.state.clone()))
            .collect();
        let decision = reservation::reserve_order(
            &reservation.state,
            placed.order_id,
            &placed.quantities(),
            &states,
        );
        self.append(
            tx,
            cause,
            placed.order_id,
            &reservation,
            &products,
            decision,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(order_id = %cancelled.order_id))]
    async fn release(
        &self,
        tx: &mut PgConnection,
        cause: &ForeignEvent,
        cancelled: &OrderCancelled,
    ) -> Result<(), HandleError> {
        let reservation = load_reservation(tx, cancelled.order_id).await?;
        let decision = reservation::release_order(&reservation.state, cancelled.order_id);
        let mut products = HashMap::new();
        for (product_id, _) in &decision.products {
            products.insert(*product_id, load_product(tx, *product_id).await?);
        }
        self.append(
            tx,
            cause,
            cancelled.order_id,
            &reservation,
            &products,
            decision,
        )
        .await
    }

    /// Appends the decision to the reservation stream and each product stream, each expecting
    /// the version it was loaded at, in one statement batch on the consumer's transaction.
    async fn append(
        &self,
        tx: &mut PgConnection,
        cause: &ForeignEvent,
        order_id: Uuid,
        reservation: &Loaded<ReservationState>,
        products: &HashMap<Uuid, Loaded<ProductState>>,
        decision: SagaDecision,
    ) -> Result<(), HandleError> {
        if decision.is_empty() {
            tracing::debug!("order already handled; nothing to append");
            return Ok(());
        }
        let metadata = Metadata {
            correlation_id: cause.metadata.correlation_id.clone(),
            causation_id: Some(cause.event_id.to_string()),
            traceparent: cause.metadata.traceparent.clone(),
        };
        let mut appends = vec![StreamAppend {
            stream_id: reservation::stream_id(order_id),
            expected: reservation.expected(),
            events: decision
                .reservation
                .iter()
                .map(|e| new_event(e.event_type(), e.payload(), &metadata))
                .collect(),
        }];
        for (product_id, event) in &decision.products {
            let loaded = products.get(product_id).ok_or_else(|| {
                HandleError::Poison(format!(
                    "product {product_id} was decided on but not loaded"
                ))
            })?;
            appends.push(StreamAppend {
                stream_id: product::stream_id(*product_id),
                expected: loaded.expected(),
                events: vec![new_event(event.event_type(), event.payload(), &metadata)],
            });
        }
        // Concurrent reactions insert into shared product streams; taking them in one global
        // order means they conflict (and retry) rather than deadlock.
        appends[1..].sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
        match self.store.append_in_tx(tx, &appends).await {
            Ok(_) => {
                tracing::info!(
                    outcome = decision.reservation.first().map(|e| e.event_type()),
                    products = decision.products.len(),
                    "reservation decided"
                );
                Ok(())
            }
            Err(e @ StoreError::Conflict { .. }) => {
                tracing::debug!(error = %e, "a stream changed meanwhile; retrying on fresh state");
                Err(HandleError::Transient(e.into()))
            }
            Err(e @ StoreError::Database(_)) => Err(HandleError::Transient(e.into())),
            // Invalid ids or types, a reused event id: retrying cannot help.
            Err(e) => Err(HandleError::Poison(e.to_string())),
        }
    }
}

async fn load_reservation(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Loaded<ReservationState>, HandleError> {
    let stream_id = reservation::stream_id(order_id);
    let events = read_stream_on(tx, &stream_id)
        .await
        .with_context(|| format!("reading {stream_id}"))?;
    Ok(fold_reservation(&events)?)
}

async fn load_product(
    tx: &mut PgConnection,
    product_id: Uuid,
) -> Result<Loaded<ProductState>, HandleError> {
    let stream_id = product::stream_id(product_id);
    let events = read_stream_on(tx, &stream_id)
        .await
        .with_context(|| format!("reading {stream_id}"))?;
    Ok(fold_product(&events)?)
}
