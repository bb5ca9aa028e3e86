//! Rebuilding order-service's projections from what its own database holds (see
//! `event_store::replay`): `orders` from this service's events in the store, `catalog` from
//! product-service's events in the inbox, never from what JetStream still retains.

use std::sync::Arc;

use event_store::replay::Target;

use crate::projections::catalog::{self, CatalogProjection};
use crate::projections::orders::{self, OrdersProjection};

/// Every projection of this service that can be rebuilt, with the tables it writes.
pub fn targets() -> Vec<Target> {
    debug_assert_eq!(orders::NAME, "orders");
    debug_assert_eq!(catalog::NAME, "catalog");
    vec![
        Target::inline(Arc::new(OrdersProjection)),
        Target::inbox(Arc::new(CatalogProjection)),
    ]
}
