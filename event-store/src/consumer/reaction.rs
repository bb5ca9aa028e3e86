//! What a service plugs into the consumer: a [`Reaction`] per concern, and how one says it
//! could not apply an event ([`HandleError`]).

use futures::future::BoxFuture;
use sqlx::PgConnection;

use tracing::Instrument;

use super::fate::{is_race, sqlstate};
use crate::aggregate::LoadError;
use crate::envelope::ForeignEvent;
use crate::inbox::Recording;
use crate::preload::Reads;
use crate::wire::DecodeError;
use crate::StoreError;

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The event can never be applied (bad payload, broken invariant): dead-letter it.
    #[error("poison message: {0}")]
    Poison(String),
    /// The state the handler decided on changed meanwhile (another writer appended to a
    /// stream it read): decided again at once, on fresh state, in a new transaction.
    #[error("concurrent write: {0}")]
    Conflict(String),
    /// Worth retrying later (database unavailable, a timeout).
    #[error("transient failure: {0}")]
    Transient(#[from] anyhow::Error),
    /// Written at a schema version newer than this service reads, and lacking what it needs
    /// ([`DecodeError::TooNew`]): held for redelivery while the service is upgraded, and
    /// dead-lettered (kind `newer_schema`) only once its deliveries run out.
    #[error("newer schema: {0}")]
    NewerSchema(String),
}

impl From<DecodeError> for HandleError {
    /// An event this service can never read is poison; one written by a newer release is
    /// held until this service can read it.
    fn from(e: DecodeError) -> Self {
        if e.is_too_new() {
            HandleError::NewerSchema(e.to_string())
        } else {
            HandleError::Poison(e.to_string())
        }
    }
}

impl HandleError {
    /// What a failed append means for the event that caused it: a version conflict is decided
    /// again; a database error is classified by [`HandleError::database`]; anything else (an
    /// invalid stream id or event type, a reused event id) cannot get better by retrying.
    pub fn from_store(error: StoreError, doing: &str) -> HandleError {
        match error {
            e @ StoreError::Conflict { .. } => HandleError::Conflict(format!("{doing}: {e}")),
            StoreError::Database(e) => HandleError::database(e, doing),
            // Applying the just-appended events to a read model failed: worth retrying (a
            // database that went away), and dead-lettered once deliveries run out.
            e @ StoreError::Projection { .. } => {
                HandleError::Transient(anyhow::Error::new(e).context(doing.to_owned()))
            }
            other => HandleError::Poison(format!("{doing}: {other}")),
        }
    }

    /// A database error while handling an event: a data exception (SQLSTATE class 22, such as
    /// a NUL character in a text) fails the same way on every delivery, so it is poison; a
    /// serialization failure, deadlock or unique violation is a race, decided again; all else
    /// (connections, timeouts) is worth retrying later.
    pub fn database(error: sqlx::Error, doing: &str) -> HandleError {
        match sqlstate(&error).as_deref() {
            Some(code) if code.starts_with("22") => {
                HandleError::Poison(format!("{doing}: {error}"))
            }
            Some(code) if is_race(code) => HandleError::Conflict(format!("{doing}: {error}")),
            _ => HandleError::Transient(anyhow::Error::new(error).context(doing.to_owned())),
        }
    }
}

impl From<LoadError> for HandleError {
    /// Inside a consumer: a corrupt stream fails the same way on every delivery (poison); a
    /// database error is classified as every other one is.
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Database(e) => HandleError::database(e, "loading aggregates"),
            LoadError::Corrupt(e) => HandleError::Poison(format!("{e:#}")),
            LoadError::NewerSchema(e) => HandleError::NewerSchema(format!("{e:#}")),
        }
    }
}

/// Something a service does with the other service's events: a reaction that appends events
/// of its own, or a projection of foreign events (order-service's catalogue).
pub trait Reaction: Send + Sync + 'static {
    fn name(&self) -> &str;

    /// The tables a projection of foreign events writes, which a rebuild
    /// ([`crate::replay`]) builds afresh from the inbox. A reaction that appends events has
    /// none (it is never replayed); none by default.
    fn tables(&self) -> &[&str] {
        &[]
    }

    /// The streams this reaction will load to handle `events`, declared before it runs so that
    /// the consumer reads them with what the inbox holds of the batch, in the batch's one read,
    /// and offers them through [`Recording::preloaded`]. Declared for every event of the batch
    /// (the inbox has not yet said which are new), so a few may go unused. None by default:
    /// the reaction then queries what it loads itself, one round trip more.
    fn reads(&self, events: &[&ForeignEvent], reads: &mut Reads) {
        let _ = (events, reads);
    }

    /// Handles one event inside the consumer's transaction. Appends go through
    /// [`EventStore::append_in_tx`] or [`crate::aggregate::BatchAppend`] on the same
    /// connection.
    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ForeignEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>>;

    /// Handles a batch of events, in the order given (within a stream, version order), with
    /// the same effect as [`Reaction::handle`] on each in turn. Override it to work
    /// set-based: one read and one write per batch instead of per event. An error fails the
    /// whole batch; the consumer then runs it again one event at a time.
    fn handle_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a ForeignEvent],
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            for event in events {
                self.handle(&mut *tx, event)
                    .instrument(consume_span(event))
                    .await?;
            }
            Ok(())
        })
    }

    /// As [`Reaction::handle_batch`], in the consumer's recording transaction, offered the
    /// batch's inbox rows: a reaction that writes its effect in one statement may take them
    /// into it ([`crate::aggregate::BatchAppend::write`]), which saves the consumer its own
    /// insert. By default the rows are left to the consumer.
    fn handle_recording<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a ForeignEvent],
        recording: &'a Recording<'a>,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        let _ = recording;
        self.handle_batch(tx, events)
    }
}

/// A reaction that works set-based: what it does for one event is what it does for a batch
/// of one. Implement this instead of [`Reaction`], which it then is.
pub trait BatchReaction: Send + Sync + 'static {
    /// The name of the reaction (logs, metrics).
    const NAME: &'static str;
    /// The tables it writes when it is a projection of foreign events ([`Reaction::tables`]).
    const TABLES: &'static [&'static str] = &[];

    /// As [`Reaction::reads`].
    fn reads(&self, events: &[&ForeignEvent], reads: &mut Reads) {
        let _ = (events, reads);
    }

    /// As [`Reaction::handle_batch`]: one read and one write for the whole batch. In the
    /// consumer's recording transaction `recording` offers the batch's inbox rows
    /// ([`Reaction::handle_recording`]); elsewhere (a rebuild, a test) it is `None`.
    fn handle_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a ForeignEvent],
        recording: Option<&'a Recording<'a>>,
    ) -> BoxFuture<'a, Result<(), HandleError>>;
}

impl<T: BatchReaction> Reaction for T {
    fn name(&self) -> &str {
        T::NAME
    }

    fn tables(&self) -> &[&str] {
        T::TABLES
    }

    fn reads(&self, events: &[&ForeignEvent], reads: &mut Reads) {
        BatchReaction::reads(self, events, reads)
    }

    fn handle<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        event: &'a ForeignEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let one = [event];
            BatchReaction::handle_batch(self, tx, &one, None).await
        })
    }

    fn handle_batch<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a ForeignEvent],
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        BatchReaction::handle_batch(self, tx, events, None)
    }

    fn handle_recording<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        events: &'a [&'a ForeignEvent],
        recording: &'a Recording<'a>,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        BatchReaction::handle_batch(self, tx, events, Some(recording))
    }
}

/// The span of one event's handling: every log line of the handlers names the request that
/// started the saga.
pub fn consume_span(event: &ForeignEvent) -> tracing::Span {
    tracing::info_span!(
        "consume",
        event_id = %event.event_id,
        stream_id = %event.stream_id,
        version = event.stream_version,
        event_type = %event.event_type,
        correlation_id = event.metadata.correlation_id.as_deref(),
        traceparent = event.metadata.traceparent.as_deref(),
    )
}
