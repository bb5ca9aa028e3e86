//! The contract between the services: every event one service emits is read by the other's
//! tolerant view (or deliberately ignored), so a rename or a removed field fails here, not in
//! production. Samples come from each service's own domain decisions, as real payloads.

use std::collections::{BTreeSet, HashMap};

use event_store::wire::{DecodeError, WireEvent as _};
use order_service::domain as orders;
use product_service::domain as products;
use uuid::Uuid;

/// An event as written: its type, schema version and payload.
type Sample = (&'static str, i32, serde_json::Value);

/// Every (type, version, payload) product-service writes, produced by its domain.
fn product_service_samples() -> Vec<Sample> {
    use products::commands::ProductCommand;
    use products::product::{decide, evolve, ProductState};
    use products::reservation::{self, ReservationState};

    let (product_id, order_id) = (Uuid::new_v4(), Uuid::new_v4());
    let mut samples = Vec::new();
    let mut state = ProductState::default();
    let mut run = |state: &mut ProductState, command| {
        for e in decide(state, command).expect("the domain accepts the command") {
            samples.push((e.event_type(), e.schema_version(), e.payload()));
            *state = evolve(std::mem::take(state), &e);
        }
    };
    run(
        &mut state,
        ProductCommand::CreateProduct {
            product_id,
            name: "Mug".into(),
            price_cents: 900,
            currency: "EUR".into(),
            stock: 3,
        },
    );
    run(&mut state, ProductCommand::ChangePrice { price_cents: 950 });
    run(&mut state, ProductCommand::Restock { quantity: 2 });
    run(
        &mut state,
        ProductCommand::ReserveStock {
            order_id,
            quantity: 1,
        },
    );
    // StockReleased comes from the saga's release below.

    let catalogue = HashMap::from([(product_id, state)]);
    let confirmed = reservation::reserve_order(
        &ReservationState::None,
        order_id,
        &[(product_id, 2)],
        &catalogue,
    );
    let rejected = reservation::reserve_order(
        &ReservationState::None,
        order_id,
        &[(product_id, 99)],
        &catalogue,
    );
    let mut reserved = ReservationState::None;
    for e in &confirmed.reservation {
        reserved = reservation::evolve(reserved, e);
    }
    let released = reservation::release_order(&reserved, order_id);
    for decision in [confirmed, rejected, released] {
        samples.extend(
            decision
                .reservation
                .iter()
                .map(|e| (e.event_type(), e.schema_version(), e.payload())),
        );
        samples.extend(
            decision
                .products
                .iter()
                .map(|(_, e)| (e.event_type(), e.schema_version(), e.payload())),
        );
    }
    samples
}

/// Every (type, version, payload) order-service writes, produced by its domain.
fn order_service_samples() -> Vec<Sample> {
    use orders::commands::OrderCommand;
    use orders::events::OrderLine;
    use orders::order::{decide, evolve, OrderState};

    let place = || OrderCommand::PlaceOrder {
        order_id: Uuid::new_v4(),
        customer_id: "alice".into(),
        lines: vec![OrderLine {
            product_id: Uuid::new_v4(),
            quantity: 2,
            unit_price: orders::events::Money {
                amount_minor: 450,
                currency: "EUR".into(),
            },
        }],
    };
    let mut samples = Vec::new();
    let mut history = |commands: Vec<OrderCommand>| {
        let mut state = OrderState::default();
        for command in commands {
            for e in decide(&state, command).expect("the domain accepts the command") {
                samples.push((e.event_type(), e.schema_version(), e.payload()));
                state = evolve(state, &e);
            }
        }
    };
    history(vec![place(), OrderCommand::Confirm, OrderCommand::Cancel]);
    history(vec![
        place(),
        OrderCommand::Reject {
            reason: "insufficient stock".into(),
            product_id: Some(Uuid::new_v4()),
        },
    ]);
    samples
}

fn check(
    emitted_types: &[&str],
    samples: &[Sample],
    consumed_types: &[&str],
    read: impl Fn(&str, i32, &serde_json::Value) -> Result<bool, DecodeError>,
) {
    let sampled: BTreeSet<&str> = samples.iter().map(|(t, _, _)| *t).collect();
    let emitted: BTreeSet<&str> = emitted_types.iter().copied().collect();
    assert_eq!(sampled, emitted, "every emitted type needs a sample here");
    for consumed in consumed_types {
        assert!(
            emitted.contains(consumed),
            "{consumed} is read but never written"
        );
    }
    for (event_type, version, payload) in samples {
        let understood = read(event_type, *version, payload)
            .unwrap_or_else(|e| panic!("{event_type} {payload} cannot be read: {e}"));
        assert_eq!(
            understood,
            consumed_types.contains(event_type),
            "{event_type}: read exactly the consumed types, ignore the rest"
        );
    }
}

#[test]
fn every_event_product_service_emits_is_read_by_order_service() {
    check(
        products::EVENT_TYPES,
        &product_service_samples(),
        orders::CONSUMED_EVENT_TYPES,
        |t, v, p| Ok(orders::product_events::ProductEvent::from_stored(t, v, p)?.is_some()),
    );
}

#[test]
fn every_event_order_service_emits_is_read_by_product_service() {
    check(
        orders::EVENT_TYPES,
        &order_service_samples(),
        products::CONSUMED_EVENT_TYPES,
        |t, v, p| Ok(products::order_events::OrderEvent::from_stored(t, v, p)?.is_some()),
    );
}

/// A consumer reads every version its producer writes: for each consumed type, the same
/// current version, and the consumer's golden fixtures are copies of the producer's.
#[test]
fn consumers_know_the_current_version_of_every_consumed_type_and_share_its_fixtures() {
    use event_store::wire::WireEvent;
    use std::path::Path;

    fn fixtures(crate_dir: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(crate_dir)
            .join("tests/fixtures/events")
    }
    fn same_fixtures(
        types: &[&str],
        current: impl Fn(&str) -> Option<i32>,
        producer: &str,
        consumer: &str,
    ) {
        for event_type in types {
            let version = current(event_type).unwrap();
            for v in 1..=version {
                let name = format!("{event_type}.v{v}.json");
                let read = |dir: &str| {
                    let text = std::fs::read_to_string(fixtures(dir).join(&name))
                        .unwrap_or_else(|e| panic!("{dir}'s {name}: {e}"));
                    serde_json::from_str::<serde_json::Value>(&text).unwrap()
                };
                assert_eq!(
                    read(producer),
                    read(consumer),
                    "{name}: the consumer's copy differs"
                );
            }
        }
    }

    for event_type in orders::CONSUMED_EVENT_TYPES {
        let produced = products::events::ProductEvent::current_version(event_type)
            .or_else(|| products::events::ReservationEvent::current_version(event_type));
        assert_eq!(
            orders::product_events::ProductEvent::current_version(event_type),
            produced,
            "{event_type}"
        );
    }
    for event_type in products::CONSUMED_EVENT_TYPES {
        assert_eq!(
            products::order_events::OrderEvent::current_version(event_type),
            orders::events::OrderEvent::current_version(event_type),
            "{event_type}"
        );
    }
    same_fixtures(
        orders::CONSUMED_EVENT_TYPES,
        orders::product_events::ProductEvent::current_version,
        "product-service",
        "order-service",
    );
    same_fixtures(
        products::CONSUMED_EVENT_TYPES,
        products::order_events::OrderEvent::current_version,
        "order-service",
        "product-service",
    );
}

/// Each service's AsyncAPI document names every message it consumes as its producer's
/// document does: the same channel address and the same `ce-type`, `ce-source`,
/// `ce-dataschema` and `ce-schemaversion`, so an event maps to one message in both.
#[test]
fn each_consumed_message_is_named_as_its_producer_publishes_it() {
    use serde_json::Value;

    let products = product_service::api::asyncapi::document(&product_service::Config::defaults())
        .unwrap()
        .0;
    let orders = order_service::api::asyncapi::document(&order_service::Config::defaults())
        .unwrap()
        .0;
    let constant = |doc: &Value, key: &str, header: &str| {
        doc["components"]["messages"][key]["headers"]["properties"][header]["const"].clone()
    };
    let mut compared = 0;
    for (consumer, producer) in [(&products, &orders), (&orders, &products)] {
        let received = consumer["operations"]
            .as_object()
            .unwrap()
            .values()
            .filter(|op| op["action"] == "receive");
        for operation in received {
            let channel = operation["channel"]["$ref"].as_str().unwrap();
            let channel = channel.strip_prefix("#/channels/").unwrap();
            let (mine, theirs) = (
                &consumer["channels"][channel],
                &producer["channels"][channel],
            );
            assert_eq!(mine["address"], theirs["address"], "{channel}");
            assert_eq!(
                producer["operations"][format!("send{channel}")]["action"],
                "send",
                "{channel}"
            );
            for key in mine["messages"].as_object().unwrap().keys() {
                for header in ["ce-type", "ce-source", "ce-dataschema", "ce-schemaversion"] {
                    let expected = constant(producer, key, header);
                    assert!(expected.is_string(), "{key} {header}");
                    assert_eq!(constant(consumer, key, header), expected, "{key} {header}");
                }
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 13);
}
