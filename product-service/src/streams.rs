//! Loading aggregates: read a stream, fold its events, remember the version for the next append.
//!
//! Products are loaded from their snapshot and the events after it (a product stream gains an
//! event per order forever, so reading it whole would grow without end); reservations, a few
//! events per order, are folded whole. Both ways give the state the events give:
//! `tests/service/snapshots.rs` checks that the snapshot path decides as the full fold does.

use std::collections::HashMap;

use anyhow::Context as _;
use event_store::{snapshot, ExpectedVersion, RecordedEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::events::{ProductEvent, ReservationEvent};
use crate::domain::product::{self, ProductState, SNAPSHOT_SCHEMA_VERSION};
use crate::domain::reservation::{self, ReservationState};

/// A command writes a product's snapshot once this many events were folded on top of the
/// last one. (Reactions write one for every product they append to, once per batch.)
pub const SNAPSHOT_EVERY: usize = 32;

/// An aggregate's state and the version of the last event folded into it (0: no stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<S> {
    pub state: S,
    pub version: i64,
}

impl<S> Loaded<S> {
    /// What the next append must expect so that any concurrent write makes it conflict.
    pub fn expected(&self) -> ExpectedVersion {
        if self.version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(self.version)
        }
    }
}

/// A product as loaded, and how many events were folded on top of its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedProduct {
    pub loaded: Loaded<ProductState>,
    pub folded: usize,
}

pub fn fold_product(events: &[RecordedEvent]) -> anyhow::Result<Loaded<ProductState>> {
    fold(
        Loaded::default(),
        events,
        ProductEvent::from_stored,
        product::evolve,
    )
}

pub fn fold_reservation(events: &[RecordedEvent]) -> anyhow::Result<Loaded<ReservationState>> {
    fold(
        Loaded::default(),
        events,
        ReservationEvent::from_stored,
        reservation::evolve,
    )
}

impl<S: Default> Default for Loaded<S> {
    fn default() -> Self {
        Loaded {
            state: S::default(),
            version: 0,
        }
    }
}

/// Folds stored events onto `start`; types this code does not know are skipped (they still
/// count for the version), a known type that does not decode is an error.
fn fold<S, E>(
    start: Loaded<S>,
    events: &[RecordedEvent],
    decode: fn(&str, &serde_json::Value) -> Result<Option<E>, serde_json::Error>,
    evolve: fn(S, &E) -> S,
) -> anyhow::Result<Loaded<S>> {
    let Loaded {
        mut state,
        mut version,
    } = start;
    for stored in events {
        let decoded = decode(&stored.event_type, &stored.payload).with_context(|| {
            format!(
                "decoding {} at version {} of {}",
                stored.event_type, stored.stream_version, stored.stream_id
            )
        })?;
        if let Some(event) = decoded {
            state = evolve(state, &event);
        }
        version = stored.stream_version;
    }
    Ok(Loaded { state, version })
}

/// Loads products from their snapshots and the events after them, in one query whatever
/// their number, on `conn` (a reaction's transaction sees what it will append to). Every id
/// asked for is in the answer; one without events is the default (not existing) state.
pub async fn load_products(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> anyhow::Result<HashMap<Uuid, LoadedProduct>> {
    Ok(load_for_saga(conn, &[], ids).await?.1)
}

/// Loads the reservations of these orders, in one query, on `conn`.
pub async fn load_reservations(
    conn: &mut PgConnection,
    order_ids: &[Uuid],
) -> anyhow::Result<HashMap<Uuid, Loaded<ReservationState>>> {
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
) -> anyhow::Result<(
    HashMap<Uuid, Loaded<ReservationState>>,
    HashMap<Uuid, LoadedProduct>,
)> {
    let reservation_streams: Vec<String> = order_ids
        .iter()
        .map(|id| reservation::stream_id(*id))
        .collect();
    let product_streams: Vec<String> = product_ids
        .iter()
        .map(|id| product::stream_id(*id))
        .collect();
    let all: Vec<&str> = reservation_streams
        .iter()
        .chain(&product_streams)
        .map(String::as_str)
        .collect();
    // Only product streams have snapshots (of `ProductState`'s schema).
    let mut found = snapshot::load::<ProductState>(conn, &all, SNAPSHOT_SCHEMA_VERSION)
        .await
        .context("reading reservations and products")?;
    let mut take = |stream: &str| {
        found.remove(stream).unwrap_or(snapshot::Loaded {
            snapshot: None,
            events: Vec::new(),
        })
    };
    let mut reservations = HashMap::with_capacity(order_ids.len());
    for (id, stream) in order_ids.iter().zip(&reservation_streams) {
        reservations.insert(*id, fold_reservation(&take(stream).events)?);
    }
    let mut products = HashMap::with_capacity(product_ids.len());
    for (id, stream) in product_ids.iter().zip(&product_streams) {
        let loaded = take(stream);
        let start = loaded.snapshot.map_or_else(Loaded::default, |s| Loaded {
            state: s.state,
            version: s.version,
        });
        let folded = loaded.events.len();
        let loaded = fold(
            start,
            &loaded.events,
            ProductEvent::from_stored,
            product::evolve,
        )?;
        products.insert(*id, LoadedProduct { loaded, folded });
    }
    Ok((reservations, products))
}

/// Stores the snapshots of these products (id, state, version) in one statement.
pub async fn save_snapshots(
    conn: &mut PgConnection,
    products: &[(Uuid, &ProductState, i64)],
) -> anyhow::Result<()> {
    let streams: Vec<String> = products
        .iter()
        .map(|(id, _, _)| product::stream_id(*id))
        .collect();
    let rows: Vec<(&str, i64, &ProductState)> = streams
        .iter()
        .zip(products)
        .map(|(stream, (_, state, version))| (stream.as_str(), *version, *state))
        .collect();
    snapshot::save(conn, SNAPSHOT_SCHEMA_VERSION, &rows)
        .await
        .context("saving product snapshots")
}
