//! Running an order command against the store: load the stream, fold, decide, append with the
//! loaded version as the expectation, and on a concurrent write decide again.

use event_store::{EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StoreError};
use uuid::Uuid;

use crate::domain::commands::OrderCommand;
use crate::domain::error::DomainError;
use crate::domain::events::OrderEvent;
use crate::domain::order::{self, OrderState};
use crate::domain::SCHEMA_VERSION;

/// Retries after a conflicting concurrent append, before answering with the conflict.
const CONFLICT_RETRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored event of this service does not decode: a bug, never the client's fault.
    #[error("stored order events cannot be read: {0}")]
    Corrupt(anyhow::Error),
}

/// An order after a command, with the stream version that includes the command's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub state: OrderState,
    pub version: i64,
}

/// Decides `command` on the order `order_id` and appends what it yields. A command that
/// yields nothing appends nothing and returns the order as it is.
#[tracing::instrument(skip_all, fields(order_id = %order_id), err(level = "debug"))]
pub async fn execute(
    store: &EventStore,
    order_id: Uuid,
    command: OrderCommand,
    metadata: &Metadata,
) -> Result<Executed, CommandError> {
    let stream = order::stream_id(order_id);
    let mut retries = 0;
    loop {
        let (state, version) = load(store, &stream).await?;
        let events = order::decide(&state, command.clone())?;
        if events.is_empty() {
            return Ok(Executed { state, version });
        }
        let expected = match version {
            0 => ExpectedVersion::NoStream,
            n => ExpectedVersion::Exact(n),
        };
        match store
            .append(&stream, expected, &to_new_events(&events, metadata))
            .await
        {
            Ok(appended) => {
                return Ok(Executed {
                    state: events.iter().fold(state, order::evolve),
                    version: appended.stream_version,
                })
            }
            Err(StoreError::Conflict { .. }) if retries < CONFLICT_RETRIES => {
                retries += 1;
                tracing::debug!(retries, "concurrent write to the order; deciding again");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Decides `command` on an order whose id the caller has just drawn (a fresh time-ordered
/// uuid), so its stream cannot exist: nothing is read, and the append expects no stream.
#[tracing::instrument(skip_all, fields(order_id = %order_id), err(level = "debug"))]
pub async fn execute_new(
    store: &EventStore,
    order_id: Uuid,
    command: OrderCommand,
    metadata: &Metadata,
) -> Result<Executed, CommandError> {
    let events = order::decide(&OrderState::default(), command)?;
    let appended = store
        .append(
            &order::stream_id(order_id),
            ExpectedVersion::NoStream,
            &to_new_events(&events, metadata),
        )
        .await?;
    Ok(Executed {
        state: events.iter().fold(OrderState::default(), order::evolve),
        version: appended.stream_version,
    })
}

/// The order folded from its stream, and the stream's version (0 when it does not exist).
pub async fn load(store: &EventStore, stream: &str) -> Result<(OrderState, i64), CommandError> {
    let recorded = store.read_stream(stream, 1).await?;
    fold(&recorded)
}

/// The order folded from its stored events, and the version of the last one.
pub(crate) fn fold(recorded: &[RecordedEvent]) -> Result<(OrderState, i64), CommandError> {
    let mut state = OrderState::default();
    let mut version = 0;
    for r in recorded {
        let event = OrderEvent::from_stored(&r.event_type, &r.payload).map_err(|e| {
            CommandError::Corrupt(anyhow::anyhow!(
                "{} version {} ({}): {e}",
                r.stream_id,
                r.stream_version,
                r.event_type
            ))
        })?;
        if let Some(event) = event {
            state = order::evolve(state, &event);
        }
        version = r.stream_version;
    }
    Ok((state, version))
}

/// Events ready to append, each with a fresh time-ordered id and the request's metadata.
pub fn to_new_events(events: &[OrderEvent], metadata: &Metadata) -> Vec<NewEvent> {
    events
        .iter()
        .map(|e| {
            NewEvent::new(e.event_type(), e.payload())
                .with_schema_version(SCHEMA_VERSION)
                .with_metadata(metadata.clone())
        })
        .collect()
}
