//! Loading aggregates: read a stream, fold its events, remember the version for the next append.
//!
//! Products are loaded from their snapshot and the events after it (a product stream gains an
//! event per order forever, so reading it whole would grow without end); reservations, a few
//! events per order, are folded whole. Both ways give the state the events give:
//! `tests/service/snapshots.rs` checks that the snapshot path decides as the full fold does.

use std::collections::HashMap;

use anyhow::Context as _;
use event_store::aggregate::{self, Fold, FoldError, LoadError, LoadedWith};
use event_store::{snapshot, RecordedEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::product::{Product, ProductState};
use crate::domain::reservation::{Reservation, ReservationState};

pub use event_store::aggregate::Loaded;

/// A product as loaded, and how many events were folded on top of its snapshot.
pub type LoadedProduct = LoadedWith<ProductState>;

/// A product folded from its events alone, ignoring any snapshot.
pub fn fold_product(events: &[RecordedEvent]) -> Result<Loaded<ProductState>, FoldError> {
    aggregate::fold::<Product>(Loaded::default(), events)
}

pub fn fold_reservation(events: &[RecordedEvent]) -> Result<Loaded<ReservationState>, FoldError> {
    aggregate::fold::<Reservation>(Loaded::default(), events)
}

/// Loads products from their snapshots and the events after them, in one query whatever
/// their number, on `conn` (a reaction's transaction sees what it will append to). Every id
/// asked for is in the answer; one without events is the default (not existing) state.
pub async fn load_products(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, LoadedProduct>, LoadError> {
    aggregate::load_many::<Product>(conn, ids).await
}

/// Loads the reservations of these orders, in one query, on `conn`.
pub async fn load_reservations(
    conn: &mut PgConnection,
    order_ids: &[Uuid],
) -> Result<HashMap<Uuid, Loaded<ReservationState>>, LoadError> {
    Ok(load_for_saga(conn, order_ids, &[]).await?.0)
}

/// The reservations of `order_ids` and the products `product_ids` in ONE query: what a batch
/// of the saga decides on. Products come from their snapshots and the events after them;
/// reservations (a few events each, never snapshotted) are folded whole.
#[allow(clippy::type_complexity)]
pub async fn load_for_saga(
    conn: &mut PgConnection,
    order_ids: &[Uuid],
    product_ids: &[Uuid],
) -> Result<
    (
        HashMap<Uuid, Loaded<ReservationState>>,
        HashMap<Uuid, LoadedProduct>,
    ),
    LoadError,
> {
    let reservation_streams: Vec<String> = order_ids
        .iter()
        .map(|id| Reservation::stream_id(*id))
        .collect();
    let product_streams: Vec<String> = product_ids
        .iter()
        .map(|id| Product::stream_id(*id))
        .collect();
    let all: Vec<&str> = reservation_streams
        .iter()
        .chain(&product_streams)
        .map(String::as_str)
        .collect();
    // Only product streams have snapshots (of `ProductState`'s schema).
    let schema_version = Product::SNAPSHOT.map_or(-1, |p| p.schema_version);
    let mut found = snapshot::load::<ProductState>(conn, &all, schema_version).await?;
    let mut take = |stream: &str| found.remove(stream).unwrap_or_default();
    let mut reservations = HashMap::with_capacity(order_ids.len());
    for (id, stream) in order_ids.iter().zip(&reservation_streams) {
        let folded = fold_reservation(&take(stream).events).map_err(LoadError::unreadable)?;
        reservations.insert(*id, folded);
    }
    let mut products = HashMap::with_capacity(product_ids.len());
    for (id, stream) in product_ids.iter().zip(&product_streams) {
        products.insert(*id, aggregate::fold_snapshot::<Product>(take(stream))?);
    }
    Ok((reservations, products))
}

/// Stores the snapshots of these products (id, state, version) in one statement.
pub async fn save_snapshots(
    conn: &mut PgConnection,
    products: &[(Uuid, &ProductState, i64)],
) -> anyhow::Result<()> {
    aggregate::save_snapshots::<Product>(conn, products)
        .await
        .context("saving product snapshots")
}
