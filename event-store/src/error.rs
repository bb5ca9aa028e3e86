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
    /// True when retrying the same call may succeed (the database was unavailable, see
    /// [`is_unavailable`]), as opposed to a conflict or invalid input.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Database(e) if is_unavailable(e))
    }

    /// A value that could not be encoded for a statement (JSON that does not serialize).
    pub(crate) fn encode(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Database(sqlx::Error::Encode(Box::new(error)))
    }
}

/// True for errors that mean "the database cannot serve this right now" rather than a bug or
/// a refusal of this request: refused, broken or unreadable connections, an exhausted or closed
/// pool, and the server's own classes for it (08: connection exception; 53: insufficient
/// resources, such as too many connections; 57: operator intervention, such as a shutdown, a
/// crash restart, a start-up or a cancelled statement). The one definition every caller uses:
/// the HTTP edge answers 503 for it, the consumer retries in place without spending a delivery.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            ["08", "53", "57"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_unavailable_and_a_missing_row_is_not() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_unavailable(&sqlx::Error::Io(refused)));
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(StoreError::Database(sqlx::Error::PoolClosed).is_transient());
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_transient());
    }
}
