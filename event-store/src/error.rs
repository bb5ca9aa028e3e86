use uuid::Uuid;

use crate::ExpectedVersion;

/// Everything an append or a read can fail with. Callers match on the first variants;
/// `Database` is the opaque rest.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream_id}: expected version {expected}, but it is at {actual}")]
    Conflict {
        stream_id: String,
        expected: ExpectedVersion,
        actual: i64,
    },
    #[error("event id {event_id} is already stored with other content")]
    EventIdReused { event_id: Uuid },
    #[error("invalid stream id {0:?}: use 1-200 characters of [A-Za-z0-9_-]")]
    InvalidStreamId(String),
    #[error("invalid event type {0:?}: use 1-100 characters of [A-Za-z0-9_]")]
    InvalidEventType(String),
    #[error("nothing to append")]
    Empty,
    #[error("stream {0} appears twice in one append")]
    StreamRepeated(String),
    /// An inline projection failed to apply the appended events; nothing was appended.
    #[error("inline projection {projection}: {error}")]
    Projection {
        projection: String,
        #[source]
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// True when retrying the same call may succeed (the database was unreachable or a
    /// connection broke), as opposed to a conflict or invalid input.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            )
        )
    }
}
