//! `GET /asyncapi.json` and `product-service asyncapi`: the AsyncAPI document of the events
//! this service publishes and of order-service's that it consumes (`service_kit::asyncapi`).
//! [`contract`] is the one list of them, each schema version with the type that writes or
//! reads it; its tests keep it equal to the `wire_events!` enums and check every golden
//! fixture against the document.

use actix_web::web;
use service_kit::asyncapi::{self, Contract, ContractError, Document, EventSchema};

use super::resource;
use crate::config::{Config, SERVICE_NAME};
use crate::domain::{events, order_events, upcast};

/// The service whose events this one consumes, as it names itself in `ce-source`.
pub const ORDER_SERVICE: &str = "order-service";

/// Every version of every event type this service writes, with the type that writes it (the
/// current version) or reads it (an older one, in its upcast step); and every version of
/// every order-service type it reads, with the type of its own view that reads it.
pub fn contract() -> Contract {
    let own = SERVICE_NAME;
    Contract {
        published: vec![
            EventSchema::of::<upcast::ProductCreatedV1>(own, "ProductCreated", 1),
            EventSchema::of::<events::ProductCreated>(own, "ProductCreated", 2),
            EventSchema::of::<upcast::PriceChangedV1>(own, "PriceChanged", 1),
            EventSchema::of::<events::PriceChanged>(own, "PriceChanged", 2),
            EventSchema::of::<events::ProductRestocked>(own, "ProductRestocked", 1),
            EventSchema::of::<events::StockReserved>(own, "StockReserved", 1),
            EventSchema::of::<events::StockReleased>(own, "StockReleased", 1),
            EventSchema::of::<events::ReservationConfirmed>(own, "ReservationConfirmed", 1),
            EventSchema::of::<events::ReservationRejected>(own, "ReservationRejected", 1),
            EventSchema::of::<events::ReservationReleased>(own, "ReservationReleased", 1),
        ],
        consumed: vec![
            EventSchema::of::<upcast::OrderPlacedV1>(ORDER_SERVICE, "OrderPlaced", 1),
            EventSchema::of::<order_events::OrderPlaced>(ORDER_SERVICE, "OrderPlaced", 2),
            EventSchema::of::<order_events::OrderCancelled>(ORDER_SERVICE, "OrderCancelled", 1),
        ],
    }
}

/// The document for this configuration (its namespace and NATS servers).
pub fn document(config: &Config) -> Result<Document, ContractError> {
    asyncapi::document(config, env!("CARGO_PKG_VERSION"), &contract())
}

/// Serves the [`Document`] the app was given (`crate::app`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/asyncapi.json").route(web::get().to(asyncapi::asyncapi_json)));
}

#[cfg(test)]
mod tests {

    use std::path::Path;

    use service_kit::asyncapi::testing::{assert_lists, check_fixtures};
    use service_kit::asyncapi::versions;

    use super::*;
    use crate::domain::events::{ProductEvent, ReservationEvent};
    use crate::domain::order_events::OrderEvent;

    #[test]
    fn the_contract_lists_every_version_of_every_type_the_enums_declare_and_no_other() {
        let contract = contract();

        let written = [versions::<ProductEvent>(), versions::<ReservationEvent>()].concat();
        assert_lists(&contract.published, &written);
        assert_lists(&contract.consumed, &versions::<OrderEvent>());
    }

    /// Found by the `ce-dataschema` such an event carries; copies with a field taken away or
    /// of the wrong type are refused, so the check can fail.
    #[test]
    fn every_golden_fixture_fits_the_schema_the_document_gives_its_type_and_version() {
        let contract = contract();
        let document = document(&Config::defaults()).unwrap();
        let entries = [contract.published, contract.consumed].concat();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");

        let checked = check_fixtures(&document, &entries, &dir);

        assert_eq!(checked, entries.len());
    }
}
