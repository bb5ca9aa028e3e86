//! Products load from their snapshot and the events after it (`aggregate::load_many`); this
//! must give exactly what folding the whole stream gives (`aggregate::fold` over `read_stream`),
//! whatever snapshot is stored: none, one in the middle, one at the head, one of an old schema
//! version, one that no longer decodes. And the reaction, which writes the snapshots, must
//! write them at the versions its appends produced.
//!
//! Histories are made of real events through the real paths: HTTP-less commands
//! (`Commands<Product>`) for creation, price changes and restocks, and the `StockReservation`
//! reaction, driven in a transaction with hand-made `ForeignEvent`s, for reservations,
//! rejections and releases.

use std::collections::HashMap;
use std::sync::Arc;

use event_store::aggregate::{self, Commands, Loaded, LoadedWith, On};
use event_store::consumer::{ForeignEvent, Reaction as _};
use event_store::idempotency::Kept;
use event_store::testing::{self, TestDb};
use event_store::{EventStore, Metadata};
use product_service::domain::commands::ProductCommand;
use product_service::domain::events::ReservationEvent;
use product_service::domain::product::Product;
use product_service::domain::product::{self, ProductState, SNAPSHOT_SCHEMA_VERSION};
use product_service::domain::reservation::{reserve_order, ReservationState, SagaDecision};
use product_service::projections::products::ProductsProjection;
use product_service::reactions::StockReservation;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::order_placed;

/// A product-service database with the store as the service builds it, its commands and its
/// reaction, and the bookkeeping of the order events fed to the reaction.
struct Fixture {
    db: TestDb,
    store: EventStore,
    commands: Commands<Product>,
    reaction: StockReservation,
    /// Global position of the last order event handed to the reaction.
    position: i64,
    /// Orders placed within the stock and not cancelled yet, oldest first.
    open_orders: Vec<Uuid>,
}

/// What a product's `snapshots` row is set to before it is loaded.
#[derive(Debug, Clone, Copy)]
enum Snapshot {
    /// No row at all.
    None,
    /// The state folded up to this version, as the service would have saved it.
    At(i64),
    /// A row of `SNAPSHOT_SCHEMA_VERSION - 1` at the head, holding a state that is wrong.
    OldSchema,
    /// A row of the current schema at the head whose state no longer decodes.
    Undecodable,
}

impl Fixture {
    async fn new() -> Fixture {
        testing::init_tracing();
        let db = TestDb::new().await;
        product_service::app::migrate(&db.pool)
            .await
            .expect("product-service's migrations");
        let store = db.store().with_inline(vec![Arc::new(ProductsProjection)]);
        Fixture {
            commands: product_service::app::commands(store.clone()),
            reaction: StockReservation::new(store.clone()),
            db,
            store,
            position: 0,
            open_orders: Vec::new(),
        }
    }

    async fn create(&self, name: &str, price_cents: i64, stock: i64) -> Uuid {
        let product_id = Uuid::now_v7();
        let create = ProductCommand::CreateProduct {
            product_id,
            name: name.to_owned(),
            price_cents,
            currency: "USD".to_owned(),
            stock,
        };
        self.command(product_id, create).await;
        product_id
    }

    async fn command(&self, product_id: Uuid, command: ProductCommand) {
        self.commands
            .execute(
                On::Existing(product_id),
                command,
                &Metadata::default(),
                None,
                &|_| Kept::json(200, None, &()),
            )
            .await
            .expect("the command succeeds");
    }

    fn order_event(
        &mut self,
        order_id: Uuid,
        version: i64,
        event_type: &str,
        payload: Value,
    ) -> ForeignEvent {
        self.position += 1;
        ForeignEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            stream_id: format!("order-{order_id}"),
            stream_version: version,
            source_position: self.position,
            schema_version: 1,
            payload,
            metadata: Metadata::default(),
        }
    }

    /// An `OrderPlaced` of a new order that fits the stock (it may be cancelled later).
    fn placed(&mut self, lines: &[(Uuid, i64)]) -> ForeignEvent {
        let order_id = Uuid::now_v7();
        self.open_orders.push(order_id);
        self.order_event(order_id, 1, "OrderPlaced", order_placed(order_id, lines))
    }

    /// An `OrderPlaced` of a new order never to be cancelled (one beyond the stock, say).
    fn placed_never_cancelled(&mut self, lines: &[(Uuid, i64)]) -> ForeignEvent {
        let order_id = Uuid::now_v7();
        self.order_event(order_id, 1, "OrderPlaced", order_placed(order_id, lines))
    }

    /// An `OrderCancelled` of the oldest order still open.
    fn cancel_oldest(&mut self) -> ForeignEvent {
        let order_id = self.open_orders.remove(0);
        self.order_event(
            order_id,
            2,
            "OrderCancelled",
            json!({ "order_id": order_id }),
        )
    }

    /// Runs the reaction as the consumer does: `handle` for one event, `handle_batch` for
    /// more, in one transaction, committed.
    async fn react(&self, events: &[ForeignEvent]) {
        let mut tx = self.db.pool.begin().await.expect("a transaction");
        let handled = match events {
            [one] => self.reaction.handle(&mut tx, one).await,
            many => {
                let refs: Vec<&ForeignEvent> = many.iter().collect();
                self.reaction.handle_batch(&mut tx, &refs).await
            }
        };
        handled.expect("the reaction succeeds");
        tx.commit().await.expect("committed");
    }

    /// Orders reserving (alone and in batches, some beyond the stock), cancellations
    /// releasing, restocks and price changes, over all `products` (each order has a line
    /// for every product).
    async fn history(&mut self, products: &[Uuid], rounds: i64) {
        for round in 0..rounds {
            let small: Vec<(Uuid, i64)> = products.iter().map(|p| (*p, 1 + round % 2)).collect();
            let event = self.placed(&small);
            self.react(&[event]).await;

            let two: Vec<(Uuid, i64)> = products.iter().map(|p| (*p, 2)).collect();
            let too_many: Vec<(Uuid, i64)> = products.iter().map(|p| (*p, 10_000)).collect();
            let mut batch = vec![self.placed(&two), self.placed_never_cancelled(&too_many)];
            if round % 3 == 2 {
                batch.push(self.cancel_oldest());
            }
            self.react(&batch).await;

            for &product_id in products {
                if round % 2 == 1 {
                    self.command(product_id, ProductCommand::Restock { quantity: 6 })
                        .await;
                }
                if round % 5 == 4 {
                    let price_cents = 45_000 + 100 * round;
                    self.command(product_id, ProductCommand::ChangePrice { price_cents })
                        .await;
                }
            }
            if round % 4 == 3 {
                let event = self.cancel_oldest();
                self.react(&[event]).await;
            }
        }
    }

    /// The truth: every event of the product's stream folded from the first.
    async fn full_fold(&self, product_id: Uuid) -> Loaded<ProductState> {
        let events = self
            .store
            .read_stream(&product::stream_id(product_id), 1)
            .await
            .expect("reading the stream");
        aggregate::fold::<Product>(Loaded::default(), &events).expect("the stream folds")
    }

    async fn load(&self, ids: &[Uuid]) -> HashMap<Uuid, LoadedWith<ProductState>> {
        let mut conn = self.db.pool.acquire().await.expect("a connection");
        aggregate::load_many::<Product>(&mut conn, ids)
            .await
            .expect("the products load")
    }

    /// The stored snapshot row: (stream version, schema version, state).
    async fn snapshot_row(&self, product_id: Uuid) -> Option<(i64, i32, Value)> {
        sqlx::query_as(
            "SELECT stream_version, schema_version, state FROM snapshots WHERE stream_id = $1",
        )
        .bind(product::stream_id(product_id))
        .fetch_optional(&self.db.pool)
        .await
        .expect("reading the snapshot")
    }

    /// A snapshot row as is, bypassing `save_snapshots`.
    async fn insert_snapshot_row(
        &self,
        product_id: Uuid,
        version: i64,
        schema_version: i32,
        state: Value,
    ) {
        sqlx::query(
            "INSERT INTO snapshots (stream_id, stream_version, schema_version, state) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(product::stream_id(product_id))
        .bind(version)
        .bind(schema_version)
        .bind(state)
        .execute(&self.db.pool)
        .await
        .expect("inserting the snapshot row");
    }

    /// Replaces whatever snapshot the product has with `snapshot`.
    async fn set_snapshot(&self, product_id: Uuid, snapshot: Snapshot) {
        let stream = product::stream_id(product_id);
        sqlx::query("DELETE FROM snapshots WHERE stream_id = $1")
            .bind(&stream)
            .execute(&self.db.pool)
            .await
            .expect("forgetting the snapshot");
        let head = self.full_fold(product_id).await.version;
        match snapshot {
            Snapshot::None => {}
            Snapshot::At(version) => {
                let events = self
                    .store
                    .read_stream(&stream, 1)
                    .await
                    .expect("reading the stream");
                let prefix: Vec<_> = events
                    .into_iter()
                    .take_while(|e| e.stream_version <= version)
                    .collect();
                let state = aggregate::fold::<Product>(Loaded::default(), &prefix)
                    .expect("the prefix folds")
                    .state;
                let mut conn = self.db.pool.acquire().await.expect("a connection");
                aggregate::save_snapshots::<Product>(&mut conn, &[(product_id, &state, version)])
                    .await
                    .expect("saving the snapshot");
            }
            Snapshot::OldSchema => {
                // Decodes as today's state, and is wrong: were it used, the product would
                // have a stock it never had, at the head (so nothing folded on top).
                let mut wrong = self.full_fold(product_id).await.state;
                wrong.stock_available += 1_000_000;
                wrong.price_cents += 1;
                let state = serde_json::to_value(&wrong).expect("a state serialises");
                self.insert_snapshot_row(product_id, head, SNAPSHOT_SCHEMA_VERSION - 1, state)
                    .await;
            }
            Snapshot::Undecodable => {
                let state = json!({ "exists": "yes", "stock": "plenty" });
                self.insert_snapshot_row(product_id, head, SNAPSHOT_SCHEMA_VERSION, state)
                    .await;
            }
        }
    }
}

/// Orders to decide on a product of `state`: one that fits, one of exactly the stock, one
/// beyond it. Fixed ids, so both sides decide for the same orders.
fn orders(product_id: Uuid, state: &ProductState) -> Vec<(Uuid, Vec<(Uuid, i64)>)> {
    let available = state.stock_available;
    vec![
        (Uuid::from_u128(1), vec![(product_id, 1)]),
        (Uuid::from_u128(2), vec![(product_id, available.max(1))]),
        (Uuid::from_u128(3), vec![(product_id, available + 1)]),
    ]
}

fn decide(
    order_id: Uuid,
    lines: &[(Uuid, i64)],
    product_id: Uuid,
    state: &ProductState,
) -> SagaDecision {
    let products = HashMap::from([(product_id, state.clone())]);
    reserve_order(&ReservationState::None, order_id, lines, &products)
}

fn confirmed(decision: &SagaDecision) -> bool {
    matches!(
        decision.reservation.as_slice(),
        [ReservationEvent::ReservationConfirmed(_)]
    )
}

/// How many events a load must fold on top of `snapshot` for a stream at `head`.
fn expected_folded(snapshot: Snapshot, head: i64) -> usize {
    let folded = match snapshot {
        Snapshot::At(version) => head - version,
        Snapshot::None | Snapshot::OldSchema | Snapshot::Undecodable => head,
    };
    usize::try_from(folded).expect("a count")
}

/// Checks a loaded product against the full fold of its stream: the same state and version,
/// the number of events folded that the snapshot implies, and the same decisions.
async fn assert_loads_as_full_fold(
    fixture: &Fixture,
    product_id: Uuid,
    snapshot: Snapshot,
    loaded: &LoadedWith<ProductState>,
) {
    let truth = fixture.full_fold(product_id).await;
    assert!(truth.state.exists, "{snapshot:?}: the product exists");
    assert_eq!(loaded.loaded, truth, "{snapshot:?}: state and version");
    assert_eq!(
        loaded.folded,
        expected_folded(snapshot, truth.version),
        "{snapshot:?}: events folded on top of the snapshot"
    );
    for (order_id, lines) in orders(product_id, &truth.state) {
        let from_snapshot = decide(order_id, &lines, product_id, &loaded.loaded.state);
        let from_fold = decide(order_id, &lines, product_id, &truth.state);
        assert_eq!(
            from_snapshot, from_fold,
            "{snapshot:?}: decisions for {lines:?}"
        );
    }
    // The orders test what they are meant to: the first two fit, the last does not.
    let decisions: Vec<bool> = orders(product_id, &truth.state)
        .iter()
        .map(|(order_id, lines)| confirmed(&decide(*order_id, lines, product_id, &truth.state)))
        .collect();
    assert_eq!(decisions, [true, true, false], "{snapshot:?}: the orders");
}

/// A product with a real history, its snapshot replaced by each of `snapshots` in turn and
/// loaded alone after each.
async fn check_each(snapshots: &[Snapshot]) {
    let mut fixture = Fixture::new().await;
    let product_id = fixture.create("Espresso machine", 45_000, 50).await;
    fixture.history(&[product_id], 16).await;
    let head = fixture.full_fold(product_id).await.version;
    assert!(head > 40, "a history of {head} events");

    for &snapshot in snapshots {
        fixture.set_snapshot(product_id, snapshot).await;

        let loaded = fixture.load(&[product_id]).await;

        assert_loads_as_full_fold(&fixture, product_id, snapshot, &loaded[&product_id]).await;
    }
}

#[tokio::test]
async fn a_product_without_a_snapshot_loads_and_decides_as_its_full_fold() {
    check_each(&[Snapshot::None]).await;
}

#[tokio::test]
async fn snapshots_anywhere_in_the_stream_load_and_decide_as_the_full_fold() {
    // After the creation, after the second event, in the middle, one before the head, at it.
    let mut fixture = Fixture::new().await;
    let product_id = fixture.create("Grinder", 9_000, 50).await;
    fixture.history(&[product_id], 16).await;
    let head = fixture.full_fold(product_id).await.version;

    for version in [1, 2, head / 2, head - 1, head] {
        let snapshot = Snapshot::At(version);
        fixture.set_snapshot(product_id, snapshot).await;

        let loaded = fixture.load(&[product_id]).await;

        assert_loads_as_full_fold(&fixture, product_id, snapshot, &loaded[&product_id]).await;
    }
}

#[tokio::test]
async fn a_snapshot_at_the_head_loads_and_decides_as_the_full_fold_without_folding_any_event() {
    let mut fixture = Fixture::new().await;
    let product_id = fixture.create("Kettle", 6_000, 50).await;
    fixture.history(&[product_id], 16).await;
    let head = fixture.full_fold(product_id).await.version;
    fixture.set_snapshot(product_id, Snapshot::At(head)).await;

    let loaded = fixture.load(&[product_id]).await;

    assert_eq!(loaded[&product_id].folded, 0);
    assert_loads_as_full_fold(
        &fixture,
        product_id,
        Snapshot::At(head),
        &loaded[&product_id],
    )
    .await;
}

#[tokio::test]
async fn a_snapshot_of_an_old_schema_version_is_ignored_and_the_product_folded_from_its_first_event(
) {
    check_each(&[Snapshot::OldSchema]).await;
}

#[tokio::test]
async fn a_snapshot_whose_state_no_longer_decodes_is_ignored_and_the_product_folded_from_its_first_event(
) {
    check_each(&[Snapshot::Undecodable]).await;
}

#[tokio::test]
async fn products_with_every_kind_of_snapshot_load_together_as_their_full_folds() {
    let mut fixture = Fixture::new().await;
    let mut products = Vec::new();
    for name in ["Cup", "Saucer", "Jug", "Tray", "Scale", "Tamper"] {
        products.push(fixture.create(name, 1_500, 50).await);
    }
    // Orders with a line for every product: the streams interleave as in service.
    fixture.history(&products, 12).await;
    let head = fixture.full_fold(products[0]).await.version;
    let cases = [
        Snapshot::None,
        Snapshot::At(1),
        Snapshot::At(head / 2),
        Snapshot::At(head),
        Snapshot::OldSchema,
        Snapshot::Undecodable,
    ];
    for (product_id, snapshot) in products.iter().zip(cases) {
        fixture.set_snapshot(*product_id, snapshot).await;
    }
    let unknown = Uuid::now_v7();
    let mut ids = products.clone();
    ids.push(unknown);

    let loaded = fixture.load(&ids).await;

    for (product_id, snapshot) in products.iter().zip(cases) {
        assert_loads_as_full_fold(&fixture, *product_id, snapshot, &loaded[product_id]).await;
    }
    assert_eq!(loaded[&unknown].loaded, fixture.full_fold(unknown).await);
    assert_eq!(loaded[&unknown].folded, 0);
}

#[tokio::test]
async fn a_reservation_handled_alone_snapshots_its_product_at_the_new_version_and_loads_as_the_full_fold(
) {
    // Arrange: a product changed by commands only, too few events for them to snapshot.
    let mut fixture = Fixture::new().await;
    let product_id = fixture.create("Milk jug", 2_000, 10).await;
    fixture
        .command(product_id, ProductCommand::Restock { quantity: 5 })
        .await;
    fixture
        .command(
            product_id,
            ProductCommand::ChangePrice { price_cents: 2_200 },
        )
        .await;
    let before = fixture.full_fold(product_id).await.version;
    assert_eq!(fixture.snapshot_row(product_id).await, None);

    // Act: one order through `handle`.
    let placed = fixture.placed(&[(product_id, 4)]);
    fixture.react(&[placed]).await;

    // Assert: the snapshot is at the version the reservation appended, and holds the state.
    let truth = fixture.full_fold(product_id).await;
    assert_eq!(truth.version, before + 1);
    assert_eq!(
        (truth.state.stock_available, truth.state.stock_reserved),
        (11, 4)
    );
    let (version, schema_version, state) =
        fixture.snapshot_row(product_id).await.expect("a snapshot");
    assert_eq!(
        (version, schema_version),
        (truth.version, SNAPSHOT_SCHEMA_VERSION)
    );
    let state: ProductState = serde_json::from_value(state).expect("the snapshot decodes");
    assert_eq!(state, truth.state);
    let loaded = fixture.load(&[product_id]).await;
    assert_loads_as_full_fold(
        &fixture,
        product_id,
        Snapshot::At(truth.version),
        &loaded[&product_id],
    )
    .await;

    // And its release, alone too, moves the snapshot on.
    let cancelled = fixture.cancel_oldest();
    fixture.react(&[cancelled]).await;

    let truth = fixture.full_fold(product_id).await;
    assert_eq!(truth.version, before + 2);
    let (version, _, _) = fixture.snapshot_row(product_id).await.expect("a snapshot");
    assert_eq!(version, truth.version);
    let loaded = fixture.load(&[product_id]).await;
    assert_loads_as_full_fold(
        &fixture,
        product_id,
        Snapshot::At(truth.version),
        &loaded[&product_id],
    )
    .await;
}

#[tokio::test]
async fn a_batch_snapshots_every_product_it_appended_to_at_its_new_version_and_no_other() {
    // Arrange: three products with histories; the first moved on by a command since its
    // last snapshot, so the batch starts from a snapshot with events after it.
    let mut fixture = Fixture::new().await;
    let a = fixture.create("Filter papers", 500, 40).await;
    let b = fixture.create("Descaler", 900, 40).await;
    let c = fixture.create("Thermometer", 1_200, 3).await;
    fixture.history(&[a, b], 4).await;
    let on_c = fixture.placed_never_cancelled(&[(c, 1)]);
    fixture.react(&[on_c]).await;
    fixture
        .command(a, ProductCommand::Restock { quantity: 3 })
        .await;
    let (a_before, b_before) = (
        fixture.full_fold(a).await.version,
        fixture.full_fold(b).await.version,
    );
    let a_snapshot = fixture.snapshot_row(a).await.expect("a snapshot of a").0;
    assert!(a_snapshot < a_before, "a has events after its snapshot");
    let c_before = fixture.full_fold(c).await;
    let c_snapshot = fixture.snapshot_row(c).await;
    assert_eq!(c_snapshot.as_ref().map(|row| row.0), Some(c_before.version));

    // Act: one `handle_batch` with two reservations on a (one also on b), the release of an
    // order on a and b, and an order beyond c's stock.
    let batch = vec![
        fixture.placed(&[(a, 1), (b, 2)]),
        fixture.placed(&[(a, 3)]),
        fixture.cancel_oldest(),
        fixture.placed_never_cancelled(&[(c, 4)]),
    ];
    fixture.react(&batch).await;

    // Assert: a gained three events (two reservations and a release) and b two, each in one
    // append with its snapshot at the new head; c was not appended to and kept its snapshot.
    let (a_after, b_after) = (fixture.full_fold(a).await, fixture.full_fold(b).await);
    assert_eq!(a_after.version, a_before + 3);
    assert_eq!(b_after.version, b_before + 2);
    for (product_id, truth) in [(a, &a_after), (b, &b_after)] {
        let (version, schema_version, state) =
            fixture.snapshot_row(product_id).await.expect("a snapshot");
        assert_eq!(
            (version, schema_version),
            (truth.version, SNAPSHOT_SCHEMA_VERSION)
        );
        let state: ProductState = serde_json::from_value(state).expect("the snapshot decodes");
        assert_eq!(&state, &truth.state);
    }
    assert_eq!(fixture.full_fold(c).await, c_before);
    assert_eq!(fixture.snapshot_row(c).await, c_snapshot);
    let loaded = fixture.load(&[a, b, c]).await;
    for (product_id, snapshot) in [
        (a, Snapshot::At(a_after.version)),
        (b, Snapshot::At(b_after.version)),
    ] {
        assert_loads_as_full_fold(&fixture, product_id, snapshot, &loaded[&product_id]).await;
    }
    assert_eq!(loaded[&c].loaded, c_before);
}
