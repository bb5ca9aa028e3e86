//! Rebuilding product-service's projections from its own events (see `event_store::replay`).

use std::sync::Arc;

use event_store::replay::Target;

use crate::projections::products::ProductsProjection;
use crate::projections::sales::SalesProjection;

/// Every projection of this service that can be rebuilt, with the tables it writes.
pub fn targets() -> Vec<Target> {
    vec![
        Target::inline(Arc::new(ProductsProjection)),
        Target::store(Arc::new(SalesProjection)),
    ]
}
