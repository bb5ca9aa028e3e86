//! The Postgres pool every service uses.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// How long a caller waits for a connection: short, so a request fails fast with 503 when the
/// database is down or the pool exhausted, instead of hanging.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The pool settings of a service, with `max_connections`:
/// - a short acquire timeout ([`ACQUIRE_TIMEOUT`]);
/// - no ping before each acquire (sqlx's default is one round trip per checkout, on every
///   request and every consumer batch). A connection that broke while idle fails its first
///   statement instead, which callers already treat as the database being unavailable (503, or
///   a retry in place), and the pool replaces it.
pub fn options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
}

/// Connects lazily (the service starts even while Postgres is down) with [`options`] and
/// [`with_session_settings`].
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = with_session_settings(PgConnectOptions::from_str(url)?);
    Ok(self::options(max_connections).connect_lazy_with(options))
}

/// The session settings every connection of a service needs: an abandoned transaction is
/// ended after 10 s, so it cannot hold back the horizon readers wait on for long
/// (docs/adr/0001-no-skip-positions.md).
pub fn with_session_settings(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("idle_in_transaction_session_timeout", "10s")])
}
