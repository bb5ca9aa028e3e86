//! What a rebuild rebuilds: a projection or handler, its tables, and where its events come
//! from (so who its live writer is).

use std::sync::Arc;

use crate::consumer::Reaction;
use crate::projection::Projection;

/// Where a projection's events come from, and so who its live writer is.
#[derive(Clone)]
pub enum Source {
    /// The service's own events, applied live by a `Projector` (checkpoint
    /// `projection:<name>`).
    Store(Arc<dyn Projection>),
    /// The service's own events, applied live by every appending transaction (the store's
    /// inline projections, [`EventStore::with_inline`]); no checkpoint.
    Inline(Arc<dyn Projection>),
    /// The other service's events as recorded in the inbox, applied live by this consumer
    /// handler inside the recording transaction. Only the projection's handler: replaying a
    /// reaction that appends events would act twice.
    Inbox(Arc<dyn Reaction>),
}

/// A projection that can be rebuilt: its name, the tables it writes, and its source.
#[derive(Clone)]
pub struct Target {
    name: String,
    tables: Vec<String>,
    source: Source,
}

impl Target {
    /// A projection of the service's own events, kept by a `Projector`, writing the tables it
    /// names ([`Projection::tables`]).
    pub fn store(projection: Arc<dyn Projection>) -> Self {
        let tables = owned(projection.tables());
        Target::new(tables, Source::Store(projection))
    }

    /// A projection of the service's own events that the store applies inline, in every
    /// appending transaction ([`EventStore::with_inline`]), writing the tables it names.
    pub fn inline(projection: Arc<dyn Projection>) -> Self {
        let tables = owned(projection.tables());
        Target::new(tables, Source::Inline(projection))
    }

    /// A projection of foreign events, kept by the consumer handler `handler`, writing the
    /// tables it names ([`Reaction::tables`]).
    pub fn inbox(handler: Arc<dyn Reaction>) -> Self {
        let tables = owned(handler.tables());
        Target::new(tables, Source::Inbox(handler))
    }

    fn new(tables: Vec<String>, source: Source) -> Self {
        let name = match &source {
            Source::Store(projection) | Source::Inline(projection) => projection.name(),
            Source::Inbox(handler) => handler.name(),
        };
        Target {
            name: name.to_owned(),
            tables,
            source,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// `events` (own events from the store) or `inbox` (foreign events).
    pub fn source_kind(&self) -> &'static str {
        match self.source {
            Source::Store(_) | Source::Inline(_) => "events",
            Source::Inbox(_) => "inbox",
        }
    }
}

fn owned(tables: &[&str]) -> Vec<String> {
    tables.iter().map(|t| (*t).to_owned()).collect()
}

/// The readers of a service's store: its relay and every projection of its own events that a
/// projector keeps (inline projections and projections of the other service's events are
/// applied as events are appended or recorded: no lag).
pub fn readers(relay_checkpoint: &str, targets: &[Target]) -> Vec<crate::metrics::Reader> {
    let projections = targets
        .iter()
        .filter(|t| matches!(t.source(), Source::Store(_)))
        .map(|t| crate::metrics::Reader::Projection(t.name().to_owned()));
    std::iter::once(crate::metrics::Reader::Relay(relay_checkpoint.to_owned()))
        .chain(projections)
        .collect()
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;
    use sqlx::PgConnection;

    use super::*;
    use crate::RecordedEvent;

    struct Orders;

    impl Projection for Orders {
        fn name(&self) -> &str {
            "orders"
        }

        fn tables(&self) -> &[&str] {
            &["orders", "order_lines"]
        }

        fn apply<'a>(
            &'a self,
            _tx: &'a mut PgConnection,
            _event: &'a RecordedEvent,
        ) -> BoxFuture<'a, anyhow::Result<()>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[test]
    fn a_target_takes_its_name_and_tables_from_the_projection() {
        let target = Target::store(Arc::new(Orders));
        assert_eq!(target.name(), "orders");
        assert_eq!(target.tables(), ["orders", "order_lines"]);
        assert_eq!(target.source_kind(), "events");
        let inline = Target::inline(Arc::new(Orders));
        assert_eq!(inline.tables(), ["orders", "order_lines"]);
        assert_eq!(inline.source_kind(), target.source_kind());
    }
}
