//! Wiring: database, migrations, NATS, the background tasks, the HTTP server, graceful stop.

use std::net::TcpListener;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use async_nats::jetstream;
use event_store::consumer::{Consumer, ConsumerConfig};
use event_store::replay::Rebuilds;
use event_store::{nats, EventStore, Relay, RelayConfig};
use service_kit::admin::{self, AdminState};
use service_kit::prometheus::{self, Scrape};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, PgPool};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, request_id, ApiState};
use crate::commands::ProductCommands;
use crate::config::{Config, NatsNames, SERVICE_NAME};
use crate::projections::products::ProductsProjection;
use crate::reactions::StockReservation;
use crate::replay;

/// JetStream redeliveries before a message is dead-lettered.
const MAX_DELIVER: i64 = 10;
/// How long in-flight HTTP requests get to finish on shutdown.
const HTTP_SHUTDOWN_SECS: u64 = 10;
/// How long the relay, projector and consumer get to finish on shutdown.
const TASKS_SHUTDOWN: Duration = Duration::from_secs(15);
const STREAM_DECLARE_TIMEOUT: Duration = Duration::from_secs(10);
/// The relay's checkpoint name (also where `/metrics` and readiness read its lag).
const RELAY_CHECKPOINT: &str = "relay";

/// A built service: listening, with its background tasks running, until stopped.
pub struct Application {
    port: u16,
    server: Server,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    pool: PgPool,
    rebuilds: Rebuilds,
}

impl Application {
    /// Prepares the database, connects NATS (in the background: HTTP comes up and takes writes
    /// while NATS is down), starts the relay, projector, consumer and notifier, and binds the
    /// HTTP listener (`port 0` picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        ensure_database(&config.database_url).await?;
        let pool = event_store::pool::options(config.database_pool_size.max(2))
            .connect_with(event_store::pool::with_session_settings(
                PgConnectOptions::from_str(&config.database_url)
                    .context("DATABASE_URL is not a Postgres URL")?,
            ))
            .await
            .context("connecting to the database")?;
        let store = EventStore::new(pool.clone()).with_inline(vec![Arc::new(ProductsProjection)]);
        store
            .migrate()
            .await
            .context("running the event store's migrations")?;
        migrate(&pool).await?;

        let nats = nats::connect(&config.nats_url, config.nats_login.login()?.as_ref())
            .await
            .context("connecting to NATS")?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let notifier = store.spawn_notifier(shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = notifier.await {
                tracing::error!(error = %e, "the store notifier stopped");
            }
        });
        tasks.spawn(messaging(
            store.clone(),
            jetstream::new(nats.clone()),
            config.nats_names(),
            tasks.clone(),
            shutdown.clone(),
        ));

        let listener = TcpListener::bind(config.http_addr)
            .with_context(|| format!("binding {}", config.http_addr))?;
        let port = listener.local_addr()?.port();
        let rebuilds = Rebuilds::new(store.clone(), replay::targets(), shutdown.clone());
        let admin = config.admin_token().map(|token| {
            AdminState::new(rebuilds.clone(), move |candidate| token.matches(candidate))
        });
        let readers = event_store::replay::readers(RELAY_CHECKPOINT, rebuilds.targets());
        let scrape = Scrape::new(SERVICE_NAME, pool.clone(), readers.clone());
        let state = web::Data::new(ApiState {
            pool: pool.clone(),
            store: store.clone(),
            commands: ProductCommands::new(store),
            nats,
            readers,
            ready_max_lag: config.ready_max_lag(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(request_id::middleware))
                .app_data(state.clone())
                .configure(api::configure)
                .configure(|cfg| prometheus::routes(cfg, scrape.clone()))
                .configure(|cfg| {
                    if let Some(state) = &admin {
                        admin::routes(cfg, state.clone());
                    }
                })
                .default_service(web::to(api::not_found))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(HTTP_SHUTDOWN_SECS)
        .run();
        Ok(Application {
            port,
            server,
            shutdown,
            tasks,
            pool,
            rebuilds,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The service's database pool (tests inspect the store through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Cancelling this token stops the application as SIGTERM would.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, Ctrl-C or the shutdown token; then stops accepting HTTP, lets
    /// in-flight requests finish, stops the background tasks and waits for them.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let served = tokio::select! {
            result = &mut server => Some(result),
            _ = stop_signal() => None,
            _ = self.shutdown.cancelled() => None,
        };
        tracing::info!("shutting down");
        if served.is_none() {
            handle.stop(true).await;
        }
        self.shutdown.cancel();
        self.tasks.close();
        // Each task finishes the work in hand; none loses anything if cut short (checkpoints
        // only advance after their effect), so a task stuck on an unreachable NATS is not
        // waited for forever.
        if tokio::time::timeout(TASKS_SHUTDOWN, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop in time; exiting anyway");
        }
        // A rebuild stops between pages and drops its shadow tables; the live ones stay.
        if tokio::time::timeout(TASKS_SHUTDOWN, self.rebuilds.stop())
            .await
            .is_err()
        {
            tracing::warn!("a rebuild did not stop in time; exiting anyway");
        }
        self.pool.close().await;
        tracing::info!("stopped");
        match served {
            Some(result) => Ok(result.context("the HTTP server task failed")??),
            None => Ok(()),
        }
    }
}

/// Runs product-service's own migrations (after the event store's).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
        .run(pool)
        .await
        .context("running product-service's migrations")
}

/// Declares both JetStream streams (retrying while NATS is away), then runs the relay of this
/// service's events and the consumer of order-service's.
async fn messaging(
    store: EventStore,
    js: jetstream::Context,
    names: NatsNames,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let declare = async {
            nats::ensure_stream(&js, &names.own_stream, &names.own_prefix).await?;
            nats::ensure_stream(&js, &names.order_stream, &names.order_prefix).await
        };
        // While NATS is unreachable a request can wait long; shutdown must not.
        let declared = tokio::select! {
            _ = shutdown.cancelled() => return,
            declared = tokio::time::timeout(STREAM_DECLARE_TIMEOUT, declare) => declared,
        };
        match declared {
            Ok(Ok(_)) => break,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot declare the JetStream streams; retrying");
            }
            Err(_) => tracing::warn!("NATS does not answer; retrying to declare the streams"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    let relay = Relay::new(
        store.clone(),
        js.clone(),
        RelayConfig {
            checkpoint: RELAY_CHECKPOINT.to_owned(),
            stream: names.own_stream,
            subject_prefix: names.own_prefix,
            batch_size: 500,
        },
    );
    tasks.spawn(relay.run(shutdown.clone()));
    let consumer = Consumer::new(
        store.clone(),
        js,
        ConsumerConfig {
            stream: names.order_stream,
            subject_prefix: names.order_prefix,
            durable: names.durable,
            dead_letter_subject: names.dead_letter_subject,
            max_deliver: MAX_DELIVER,
        },
        vec![Arc::new(StockReservation::new(store))],
    );
    tasks.spawn(consumer.run(shutdown));
}

/// Creates the service's database when it does not exist, through the server's `postgres`
/// database. Failing to check is not fatal: connecting to the database itself reports the
/// real problem.
async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url).context("parsing DATABASE_URL")?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = match options.clone().database("postgres").connect().await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check whether database {name} exists");
            return Ok(());
        }
    };
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&sql).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created the database"),
            // 42P04: created meanwhile by another replica; 23505: the same race, caught in
            // the catalogue.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e).context(format!("creating database {name}")),
        }
    }
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
