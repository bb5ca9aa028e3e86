//! The Postgres pool every service uses.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Connects lazily (the service starts even while Postgres is down) with:
/// - `idle_in_transaction_session_timeout`: an abandoned transaction would hold back the
///   snapshot horizon that readers wait on (docs/adr/0001-no-skip-positions.md);
/// - a short acquire timeout, so a request fails fast with 503 instead of hanging.
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options =
        PgConnectOptions::from_str(url)?.options([("idle_in_transaction_session_timeout", "10s")]);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(options))
}

/// The session settings every connection of a service needs: an abandoned transaction is
/// ended after 10 s, so it cannot hold back the horizon readers wait on for long.
pub fn with_session_settings(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("idle_in_transaction_session_timeout", "10s")])
}
