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
    /// A projection of the service's own events that writes `tables`.
    pub fn store(projection: Arc<dyn Projection>, tables: &[&str]) -> Self {
        Target {
            name: projection.name().to_owned(),
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            source: Source::Store(projection),
        }
    }

    /// A projection of the service's own events that the store applies inline, in every
    /// appending transaction, and that writes `tables`.
    pub fn inline(projection: Arc<dyn Projection>, tables: &[&str]) -> Self {
        Target {
            name: projection.name().to_owned(),
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            source: Source::Inline(projection),
        }
    }

    /// A projection of foreign events, kept by the consumer handler `handler`, that writes
    /// `tables`.
    pub fn inbox(handler: Arc<dyn Reaction>, tables: &[&str]) -> Self {
        Target {
            name: handler.name().to_owned(),
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            source: Source::Inbox(handler),
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
