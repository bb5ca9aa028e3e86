//! The service's database: created if missing, pooled, migrated (the store's tables, then the
//! service's read models).

use std::str::FromStr;

use anyhow::Context as _;
use event_store::EventStore;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};

/// SQLSTATE of "database does not exist" and "database already exists".
const INVALID_CATALOG_NAME: &str = "3D000";
const DUPLICATE_DATABASE: &str = "42P04";

/// Connects to `url` with a pool of `size` connections (at least 2), creating its database
/// first when the server says it does not exist. A role that may not create databases works
/// as long as the database exists: it is only created after connecting to it failed.
pub async fn connect(url: &str, size: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url).context("DATABASE_URL is not a Postgres URL")?;
    create_if_missing(&options).await?;
    event_store::pool::options(size.max(2))
        .connect_with(event_store::pool::with_session_settings(options))
        .await
        .context("connecting to the database")
}

async fn create_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let error = match options.connect().await {
        Ok(conn) => {
            let _ = conn.close().await;
            return Ok(());
        }
        Err(e) => e,
    };
    if sqlstate(&error).as_deref() != Some(INVALID_CATALOG_NAME) {
        return Err(anyhow::Error::new(error).context("connecting to the database"));
    }
    let name = options
        .get_database()
        .context("DATABASE_URL names no database")?
        .to_owned();
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("connecting to the `postgres` database to create the service's database")?;
    let created = sqlx::query(&format!(
        "CREATE DATABASE \"{}\"",
        name.replace('"', "\"\"")
    ))
    .execute(&mut admin)
    .await;
    let _ = admin.close().await;
    match created {
        Ok(_) => {
            tracing::info!(database = %name, "created the database");
            Ok(())
        }
        // Another replica created it meanwhile.
        Err(e) if sqlstate(&e).as_deref() == Some(DUPLICATE_DATABASE) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating database {name}"))),
    }
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Runs the store's migrations, then the service's own (`sqlx::migrate!` of its crate). Each
/// migrator ignores the other's entries in the shared `_sqlx_migrations` table.
pub async fn migrate(pool: &PgPool, mut service: Migrator) -> anyhow::Result<()> {
    EventStore::new(pool.clone())
        .migrate()
        .await
        .context("running the event store's migrations")?;
    service.set_ignore_missing(true);
    service
        .run(pool)
        .await
        .context("running the service's migrations")
}
