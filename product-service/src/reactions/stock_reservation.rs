//! The saga step of product-service: `OrderPlaced` reserves stock for every line or none,
//! `OrderCancelled` gives it back.
//!
//! A batch of order events is decided in memory, in order, on the state its streams had when
//! the batch began (reservations folded whole, products from their snapshots), each decision
//! seeing the ones before it. Everything it appends goes into ONE `append_in_tx`, every stream
//! expecting the version it was loaded at: if any product changed meanwhile (a restock over
//! HTTP, another replica), the whole append conflicts, the consumer rolls back and decides
//! again on fresh state. So stock never goes negative, however many orders race. The
//! products' new snapshots are written in the same transaction.

use std::collections::{BTreeMap, HashMap, HashSet};

use event_store::aggregate::to_new_events;
use event_store::consumer::{BatchReaction, ForeignEvent, HandleError};
use event_store::{EventStore, Metadata, StreamAppend};
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::order_events::OrderEvent;
use crate::domain::product::{self, Product, ProductState};
use crate::domain::reservation::{self, Reservation, ReservationState, SagaDecision};
use crate::streams::{load_for_saga, load_products, save_snapshots, Loaded};

pub const NAME: &str = "stock-reservation";

pub struct StockReservation {
    store: EventStore,
}

impl StockReservation {
    pub fn new(store: EventStore) -> Self {
        StockReservation { store }
    }
}

impl BatchReaction for StockReservation {
    const NAME: &'static str = NAME;

    fn handle_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a ForeignEvent],
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(self.react(tx, events))
    }
}

/// The streams a batch reads and appends to, as it goes.
struct Working {
    reservations: HashMap<Uuid, Loaded<ReservationState>>,
    products: HashMap<Uuid, ProductState>,
    /// Versions the products were loaded at: what their appends expect.
    product_versions: HashMap<Uuid, i64>,
    /// Events to append, by stream id (sorted, so concurrent batches insert into shared
    /// product streams in one global order and conflict rather than deadlock).
    appends: BTreeMap<String, StreamAppend>,
}

impl StockReservation {
    async fn react(
        &self,
        tx: &mut PgConnection,
        events: &[&ForeignEvent],
    ) -> Result<(), HandleError> {
        let mut decoded = Vec::with_capacity(events.len());
        for event in events {
            let order_event = OrderEvent::decode(*event)?;
            if let Some(order_event) = order_event {
                decoded.push((*event, order_event));
            }
        }
        if decoded.is_empty() {
            return Ok(());
        }
        let mut working = self.load(tx, &decoded).await?;
        for (cause, order_event) in &decoded {
            let decision = match order_event {
                OrderEvent::OrderPlaced(placed) => {
                    let reservation = &working.reservations[&placed.order_id];
                    reservation::reserve_order(
                        &reservation.state,
                        placed.order_id,
                        &placed.quantities(),
                        &working.products,
                    )
                }
                OrderEvent::OrderCancelled(cancelled) => {
                    let reservation = &working.reservations[&cancelled.order_id];
                    reservation::release_order(&reservation.state, cancelled.order_id)
                }
            };
            working.record(order_event.order_id(), cause, decision)?;
        }
        if working.appends.is_empty() {
            tracing::debug!("orders already handled; nothing to append");
            return Ok(());
        }
        let appends: Vec<StreamAppend> =
            std::mem::take(&mut working.appends).into_values().collect();
        self.store
            .append_in_tx(tx, &appends)
            .await
            .map_err(|e| HandleError::from_store(e, "appending the reservations"))?;
        let touched: HashSet<&str> = appends.iter().map(|a| a.stream_id.as_str()).collect();
        let snapshots: Vec<(Uuid, &ProductState, i64)> = working
            .products
            .iter()
            .filter(|(id, _)| touched.contains(product::stream_id(**id).as_str()))
            .map(|(id, state)| {
                let appended = appends
                    .iter()
                    .find(|a| a.stream_id == product::stream_id(*id))
                    .map_or(0, |a| a.events.len() as i64);
                (*id, state, working.product_versions[id] + appended)
            })
            .collect();
        save_snapshots(tx, &snapshots).await?;
        tracing::debug!(
            orders = decoded.len(),
            streams = appends.len(),
            "reservations decided"
        );
        Ok(())
    }

    /// The reservations of every order in the batch, and every product they name: those the
    /// placed orders' lines name and those the cancelled orders' reservations hold.
    async fn load(
        &self,
        tx: &mut PgConnection,
        decoded: &[(&ForeignEvent, OrderEvent)],
    ) -> Result<Working, HandleError> {
        let order_ids: Vec<Uuid> = unique(decoded.iter().map(|(_, e)| e.order_id()));
        let placed_products = unique(decoded.iter().flat_map(|(_, e)| match e {
            OrderEvent::OrderPlaced(placed) => placed.lines.iter().map(|l| l.product_id).collect(),
            OrderEvent::OrderCancelled(_) => Vec::new(),
        }));
        let (reservations, mut loaded) = load_for_saga(tx, &order_ids, &placed_products).await?;
        // A cancellation gives back what its reservation holds: those products too.
        let released: Vec<Uuid> = unique(decoded.iter().flat_map(|(_, e)| match e {
            OrderEvent::OrderCancelled(cancelled) => match &reservations[&cancelled.order_id].state
            {
                ReservationState::Confirmed(lines) => lines.iter().map(|l| l.product_id).collect(),
                _ => Vec::new(),
            },
            OrderEvent::OrderPlaced(_) => Vec::new(),
        }))
        .into_iter()
        .filter(|id| !loaded.contains_key(id))
        .collect();
        if !released.is_empty() {
            loaded.extend(load_products(tx, &released).await?);
        }
        let product_versions = loaded
            .iter()
            .map(|(id, p)| (*id, p.loaded.version))
            .collect();
        let products = loaded
            .into_iter()
            .filter(|(_, p)| p.loaded.state.exists)
            .map(|(id, p)| (id, p.loaded.state))
            .collect();
        Ok(Working {
            reservations,
            products,
            product_versions,
            appends: BTreeMap::new(),
        })
    }
}

impl Working {
    /// Queues a decision's events and applies them to the working state, so the next
    /// decision of the batch sees them.
    fn record(
        &mut self,
        order_id: Uuid,
        cause: &ForeignEvent,
        decision: SagaDecision,
    ) -> Result<(), HandleError> {
        if decision.is_empty() {
            return Ok(());
        }
        let metadata = Metadata::caused_by(&cause.metadata, cause.event_id);
        tracing::debug!(
            %order_id,
            outcome = decision.reservation.first().map(|e| e.event_type()),
            products = decision.products.len(),
            "reservation decided"
        );
        let reservation = self.reservations.entry(order_id).or_default();
        let expected = reservation.expected();
        let stream_id = reservation::stream_id(order_id);
        for event in &decision.reservation {
            reservation.state = reservation::evolve(reservation.state.clone(), event);
        }
        self.appends
            .entry(stream_id.clone())
            .or_insert_with(|| StreamAppend {
                stream_id,
                expected,
                events: Vec::new(),
            })
            .events
            .extend(to_new_events::<Reservation>(
                &decision.reservation,
                &metadata,
            ));
        for (product_id, event) in decision.products {
            let Some(state) = self.products.remove(&product_id) else {
                return Err(HandleError::Poison(format!(
                    "product {product_id} was decided on but not loaded"
                )));
            };
            self.products
                .insert(product_id, product::evolve(state, &event));
            let version = self.product_versions.get(&product_id).copied().unwrap_or(0);
            let stream_id = product::stream_id(product_id);
            self.appends
                .entry(stream_id.clone())
                .or_insert_with(|| StreamAppend {
                    stream_id,
                    expected: Loaded { state: (), version }.expected(),
                    events: Vec::new(),
                })
                .events
                .extend(to_new_events::<Product>(&[event], &metadata));
        }
        Ok(())
    }
}

/// The distinct values, in order of first appearance.
fn unique(ids: impl Iterator<Item = Uuid>) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    ids.filter(|id| seen.insert(*id)).collect()
}
