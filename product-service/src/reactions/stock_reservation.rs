//! The saga step of product-service: `OrderPlaced` reserves stock for every line or none,
//! `OrderCancelled` gives it back.
//!
//! A batch of order events is decided in memory, in order, on the state its streams had when
//! the batch began (reservations folded whole, products from their snapshots), each decision
//! seeing the ones before it. Everything it appends goes into ONE statement, every stream
//! expecting the version it was loaded at: if any product changed meanwhile (a restock over
//! HTTP, another replica), the whole append conflicts, the consumer rolls back and decides
//! again on fresh state. So stock never goes negative, however many orders race. The
//! products' new snapshots and `products` rows are written in the same statement
//! ([`BatchAppend`]), the reservation streams before the product streams, so the verdict
//! order-service waits for is published first.
//!
//! Products are loaded from their snapshot and the events after it (a product stream gains an
//! event per order forever, so reading it whole would grow without end); reservations, a few
//! events per order, are folded whole; both are declared up front (`reads`), so the consumer
//! reads them in its one read of the batch, beside what the inbox holds ([`load_for_saga`]).
//! `tests/service/snapshots.rs` checks that the snapshot path decides as the full fold does.

use std::collections::{HashMap, HashSet};

use event_store::aggregate::{self, BatchAppend, BatchWriter, Fold, LoadError, Loaded, LoadedWith};
use event_store::consumer::{BatchReaction, ForeignEvent, HandleError, Reads, Recording};
use event_store::preload::Preloaded;
use event_store::read_model::InlineRow;
use event_store::wire::WireEvent as _;
use event_store::{snapshot, EventStore, Metadata};
use futures::future::BoxFuture;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::order_events::OrderEvent;
use crate::domain::product::{self, Product, ProductState};
use crate::domain::reservation::{self, Reservation, ReservationState, SagaDecision};
use crate::projections::products::ProductsProjection;

pub const NAME: &str = "stock-reservation";

/// Appends the reservations' and products' events with the `products` rows.
pub struct StockReservation(BatchWriter<Product>);

impl StockReservation {
    pub fn new(store: EventStore) -> Self {
        StockReservation(BatchWriter::new(
            store,
            vec![InlineRow::of::<ProductsProjection>()],
        ))
    }
}

impl BatchReaction for StockReservation {
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

    /// The reservations and the ordered products, read with the inbox's answer in the
    /// consumer's one read of the batch.
    fn reads(&self, events: &[&ForeignEvent], reads: &mut Reads) {
        // An event that does not decode declares nothing; `react` refuses it.
        let decoded: Vec<OrderEvent> = events
            .iter()
            .filter_map(|e| OrderEvent::decode(*e).ok().flatten())
            .collect();
        let (order_ids, product_ids) = named(decoded.iter());
        for stream in saga_streams(&order_ids, &product_ids) {
            reads.stream(stream, saga_schema());
        }
    }
}

/// The streams a batch reads and appends to, as it goes.
struct Working {
    reservations: HashMap<Uuid, Loaded<ReservationState>>,
    products: HashMap<Uuid, ProductState>,
    /// Versions the products were loaded at: what their appends expect.
    product_versions: HashMap<Uuid, i64>,
    /// Events to append: reservation streams first, then products, each sorted by id, so
    /// concurrent batches insert into shared product streams in one global order and
    /// conflict rather than deadlock.
    batch: BatchAppend,
}

impl StockReservation {
    async fn react(
        &self,
        tx: &mut PgConnection,
        events: &[&ForeignEvent],
        recording: Option<&Recording<'_>>,
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
        let mut working = self.load(tx, &decoded, recording).await?;
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
        let Working {
            products,
            mut batch,
            ..
        } = working;
        if batch.is_empty() {
            tracing::debug!("orders already handled; nothing to append");
            return Ok(());
        }
        for (id, state) in &products {
            self.0.settle(&mut batch, *id, state);
        }
        self.0
            .write(batch, tx, recording)
            .await
            .map_err(|e| HandleError::from_store(e, "appending the reservations"))?;
        tracing::debug!(orders = decoded.len(), "reservations decided");
        Ok(())
    }

    /// The reservations of every order in the batch, and every product they name: those the
    /// placed orders' lines name and those the cancelled orders' reservations hold.
    async fn load(
        &self,
        tx: &mut PgConnection,
        decoded: &[(&ForeignEvent, OrderEvent)],
        recording: Option<&Recording<'_>>,
    ) -> Result<Working, HandleError> {
        let (order_ids, placed_products) = named(decoded.iter().map(|(_, e)| e));
        let preloaded = recording.map(Recording::preloaded);
        let (reservations, mut loaded) =
            load_for_saga(tx, &order_ids, &placed_products, preloaded).await?;
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
            loaded.extend(aggregate::load_many::<Product>(tx, &released).await?);
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
            batch: self.0.batch().then::<Reservation>().then::<Product>(),
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
        self.batch.push::<Reservation>(
            order_id,
            reservation.version,
            &decision.reservation,
            &metadata,
        );
        for event in &decision.reservation {
            reservation.state = reservation::evolve(reservation.state.clone(), event);
        }
        for (product_id, event) in decision.products {
            let Some(state) = self.products.remove(&product_id) else {
                return Err(HandleError::Poison(format!(
                    "product {product_id} was decided on but not loaded"
                )));
            };
            self.products
                .insert(product_id, product::evolve(state, &event));
            let version = self.product_versions.get(&product_id).copied().unwrap_or(0);
            self.batch
                .push::<Product>(product_id, version, &[event], &metadata);
        }
        Ok(())
    }
}

/// The orders a batch's events name, and the products their placed lines name: the streams
/// its decisions start from (a cancellation's products come from its reservation).
fn named<'e>(events: impl Iterator<Item = &'e OrderEvent>) -> (Vec<Uuid>, Vec<Uuid>) {
    let (mut orders, mut products) = (Vec::new(), Vec::new());
    for event in events {
        orders.push(event.order_id());
        if let OrderEvent::OrderPlaced(placed) = event {
            products.extend(placed.lines.iter().map(|l| l.product_id));
        }
    }
    (unique(orders.into_iter()), unique(products.into_iter()))
}

/// The reservation streams of `order_ids`, then the product streams of `product_ids`.
fn saga_streams(order_ids: &[Uuid], product_ids: &[Uuid]) -> Vec<String> {
    let reservations = order_ids.iter().map(|id| Reservation::stream_id(*id));
    let products = product_ids.iter().map(|id| Product::stream_id(*id));
    reservations.chain(products).collect()
}

/// The snapshot schema the saga loads its streams at: only product streams have snapshots
/// (of `ProductState`'s schema); reservations have none of any.
fn saga_schema() -> i32 {
    aggregate::snapshot_schema::<Product>()
}

/// The reservations of `order_ids` and the products `product_ids` in ONE query (none, when
/// the consumer's read of the batch `preloaded` them): what a batch of the saga decides on.
/// Products come from their snapshots and the events after them; reservations (a few events
/// each, never snapshotted) are folded whole. Every id asked for is in the answer; one without
/// events is the default (not existing) state.
#[allow(clippy::type_complexity)]
async fn load_for_saga(
    conn: &mut PgConnection,
    order_ids: &[Uuid],
    product_ids: &[Uuid],
    preloaded: Option<&Preloaded>,
) -> Result<
    (
        HashMap<Uuid, Loaded<ReservationState>>,
        HashMap<Uuid, LoadedWith<ProductState>>,
    ),
    LoadError,
> {
    let streams = saga_streams(order_ids, product_ids);
    let all: Vec<&str> = streams.iter().map(String::as_str).collect();
    let mut found =
        snapshot::load_from::<ProductState>(conn, &all, saga_schema(), preloaded).await?;
    let (reservation_streams, product_streams) = streams.split_at(order_ids.len());
    let mut take = |stream: &str| found.remove(stream).unwrap_or_default();
    let mut reservations = HashMap::with_capacity(order_ids.len());
    for (id, stream) in order_ids.iter().zip(reservation_streams) {
        let folded = aggregate::fold::<Reservation>(Loaded::default(), &take(stream).events)
            .map_err(LoadError::unreadable)?;
        reservations.insert(*id, folded);
    }
    let mut products = HashMap::with_capacity(product_ids.len());
    for (id, stream) in product_ids.iter().zip(product_streams) {
        products.insert(*id, aggregate::fold_snapshot::<Product>(take(stream))?);
    }
    Ok((reservations, products))
}

/// The distinct values, in order of first appearance.
fn unique(ids: impl Iterator<Item = Uuid>) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    ids.filter(|id| seen.insert(*id)).collect()
}
