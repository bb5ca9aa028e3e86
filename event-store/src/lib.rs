//! The event store of one service: its events in Postgres, and how they leave it.
//!
//! - [`store`]: `append` with optimistic concurrency and idempotent retry, atomic appends to
//!   several streams, `read_stream` and `read_all`. Positions come from the writing
//!   transaction's id, so `read_all` can hand out events in position order without ever
//!   skipping one that commits late (docs/adr/0001-no-skip-positions.md).
//! - [`aggregate`]: commands on pure domains (`decide`/`evolve`): load (from a snapshot when
//!   the aggregate keeps them), decide, append with the loaded version, retry on conflict.
//! - [`tail`]: a subscription from a checkpoint, woken by appends ([`wakeup`]: in-process and
//!   LISTEN/NOTIFY), polling only as a fallback.
//! - [`idempotency`]: the keys of `Idempotency-Key` requests and the responses kept for them,
//!   stored in the append's transaction (docs/adr/0005-idempotency-keys.md).
//! - [`snapshot`]: aggregates' states stored beside their streams, so loading one does not
//!   grow with its history.
//! - [`checkpoint`]: where each reader has got to, stored beside the events so a reader can
//!   apply an event and advance in one transaction.
//! - [`pool`]: the connection pool settings the position scheme relies on.
//! - [`relay`]: the outbox relay from the store to NATS JetStream ([`nats`]).
//! - [`repair`]: what the broker lost, found and sent again from the store: the relay's
//!   tail check, watermarks, consumers' requests for holes and the producer's answers.
//! - [`leader`]: which replica runs the relay and each projector (a session advisory lock),
//!   and the one loop both lead with.
//! - [`locks`]: every advisory lock's key (leadership, rebuilds, the inbox), and who holds one.
//! - [`retry`]: the one retry policy ([`retry::Backoff`]) of the background loops.
//! - [`projection`] and [`consumer`]: read models of own events (a `Projector` per
//!   projection) and handlers of the other service's events, recorded in batches through the
//!   inbox ([`inbox`]); [`envelope`] is the message contract between a relay and a consumer,
//!   CloudEvents in the NATS binding's binary mode ([`cloudevents`] names its attributes).
//! - [`read_model`]: read models of one row per aggregate, folded batch by batch (the
//!   services' inline projections of their own aggregates).
//! - [`metrics`]: counters of appends and consumed messages, and the relay's and projections'
//!   lag measured from their checkpoints at scrape time.
//! - [`wire`]: [`wire_events!`], the event enums' shape: variant names are the stored type names.
//! - [`validate`]: what the store cannot hold or the wire must not carry (stream ids, event
//!   types, NUL characters), checked in one place.
//! - [`replay`]: rebuilds a projection from the events held in the database, online, by
//!   building beside the live tables and swapping (docs/adr/0002-online-rebuild.md).
//! - [`StoreError`] and [`is_unavailable`]: what went wrong, and the one definition of "the
//!   database cannot serve this right now" that the HTTP edge and the consumer share.
//! - `testing` (feature `testing`): a database per test, unique NATS names, private servers.
//!
//! Data flows: a command handler appends -> the store commits -> the relay's tail wakes ->
//! JetStream (deduplicated by event id) -> the other service's consumers.

pub mod aggregate;
pub mod checkpoint;
pub mod cloudevents;
pub mod consumer;
pub mod envelope;
mod error;
mod event;
pub mod idempotency;
mod inbox;
pub mod leader;
pub mod locks;
pub mod metrics;
pub mod nats;
pub mod pool;
pub mod preload;
pub mod projection;
pub mod read_model;
pub mod relay;
pub mod repair;
pub mod replay;
pub mod retry;
pub mod snapshot;
pub mod store;
pub mod tail;
#[cfg(feature = "testing")]
pub mod testing;
pub mod validate;
mod wakeup;
pub mod wire;

/// What the exported macros ([`wire_events!`]) refer to, so a caller needs no matching
/// dependencies of its own. Not an API.
#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use serde_json;
}

pub use error::{is_unavailable, StoreError};
pub use event::{AppendResult, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamAppend};
pub use relay::{Relay, RelayConfig};
pub use store::EventStore;
pub use tail::Tail;
