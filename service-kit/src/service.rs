//! The skeleton both services are built on, so each service's `app` is wiring only:
//!
//! 1. [`Service::start`]: the database (created if missing, migrated, pooled), the event store
//!    with the service's inline projections, NATS (connected in the background: the service
//!    starts and takes writes while NATS is down), and the store's notifier.
//! 2. [`Service::run_messaging`]: declares both JetStream streams (retrying while NATS is
//!    away), then runs the relay of the service's events and the consumer of the other's.
//! 3. [`Service::serve`]: binds the HTTP listener (port 0 picks a free port) with the shared
//!    middleware (request context, `Idempotency-Key` with its pruner) and routes (health, metrics, OpenAPI-described admin) around the service's.
//! 4. [`Application::run_until_stopped`]: serves until SIGTERM, Ctrl-C, the shutdown token
//!    or a panicking background task; then lets in-flight requests finish and drains the
//!    background tasks for a bounded time ([`crate::tasks`]).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use async_nats::jetstream;
use event_store::aggregate::{Aggregate, Commands};
use event_store::consumer::{Consumer, ConsumerConfig, Reaction};
use event_store::projection::{Projection, Projector};
use event_store::read_model::{InlineRow, StateRow};
use event_store::repair::Gaps;
use event_store::replay::{rebuild_if_missing, Rebuilds, Target};
use event_store::retry::Backoff;
use event_store::{nats, EventStore, Relay, RelayConfig};
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::{self, Cli, Command, Common, Config, EventNames, LogFormat};
use crate::error::{self, ApiError};
use crate::health::{self, Health};
use crate::idempotency::{self, Idempotency};
use crate::prometheus::{self, Scrape};
use crate::republish::Republisher;
use crate::tasks::{Tasks, DRAIN};
use crate::{database, logging, replay_cli, republish, request};

/// JetStream redeliveries of one message before it is dead-lettered.
const MAX_DELIVER: i64 = 10;
/// Aggregates each service's command executor keeps in memory (`Commands::with_cache`): a
/// few hundred bytes each, so about a few MiB at most.
const AGGREGATE_CACHE: usize = 10_000;
/// Events the relay reads and publishes per batch.
const RELAY_BATCH: i64 = 500;
/// The relay's checkpoint name (also where `/metrics` and readiness read its lag).
const RELAY_CHECKPOINT: &str = "relay";
/// How long in-flight HTTP requests get to finish on shutdown.
const HTTP_SHUTDOWN_SECS: u64 = 10;
/// How long one attempt to declare the streams may take while NATS does not answer.
const STREAM_DECLARE_TIMEOUT: Duration = Duration::from_secs(10);

/// A service's executor of commands on its aggregate `A`: each command that appends is one
/// statement, which writes the row of the inline read model `M` from the state the command
/// decided on (the row `M`'s projection folds) beside the events; a command on an aggregate
/// it appended to before decides on the state it cached then, `AGGREGATE_CACHE` of them
/// (checked by the append's expected version).
pub fn commands<A: Aggregate, M: StateRow<A>>(store: EventStore) -> Commands<A> {
    Commands::new(store)
        .with_rows(vec![InlineRow::of::<M>()])
        .with_cache(AGGREGATE_CACHE)
}

/// What a service is, for [`Service::start`].
pub struct Start<'a, S: config::Service> {
    pub config: &'a Config<S>,
    /// The service's own migrations (`sqlx::migrate!()` of its crate).
    pub migrations: Migrator,
    /// Read models of its own aggregates, updated in the transaction of every append.
    pub inline: Vec<Arc<dyn Projection>>,
}

/// A service being built: connected, migrated, its notifier running.
pub struct Service {
    name: &'static str,
    pool: PgPool,
    store: EventStore,
    nats: async_nats::Client,
    names: EventNames,
    http_addr: SocketAddr,
    common: Common,
    tasks: Tasks,
    /// Gaps the consumer noticed and has not repaired, which readiness names.
    gaps: Gaps,
}

impl Service {
    pub async fn start<S: config::Service>(start: Start<'_, S>) -> anyhow::Result<Service> {
        let common = &start.config.common;
        let pool = database::connect(&start.config.database_url, common.database_pool_size).await?;
        database::migrate(&pool, start.migrations).await?;
        let store = EventStore::new(pool.clone()).with_inline(start.inline);
        let nats = nats::connect(&common.nats_url, common.nats_login.login()?.as_ref())
            .await
            .context("connecting to NATS")?;
        let tasks = Tasks::default();
        let notifier = store.spawn_notifier(tasks.shutdown().clone());
        tasks.spawn("notifier", async move {
            // Its panic becomes this task's, reported like any other.
            if let Err(e) = notifier.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        });
        Ok(Service {
            name: S::NAME,
            pool,
            store,
            nats,
            names: start.config.nats_names(),
            http_addr: start.config.http_addr,
            common: common.clone(),
            tasks,
            gaps: Gaps::default(),
        })
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Declares both streams, then runs the relay and the consumer of the other service's
    /// events with `reactions` (called in this order for every batch).
    pub fn run_messaging(&self, reactions: Vec<Arc<dyn Reaction>>) {
        let (store, names, tasks) = (self.store.clone(), self.names.clone(), self.tasks.clone());
        let gaps = self.gaps.clone();
        let newer_schema_retry = self.common.newer_schema_retry.0;
        let producer = self.common.producer(self.name);
        let replicas = usize::from(self.common.nats_stream_replicas);
        let js = nats::jetstream(self.nats.clone());
        self.tasks.spawn("messaging", async move {
            if !declare_streams(&js, &names, replicas, tasks.shutdown()).await {
                return;
            }
            let relay = Relay::new(
                store.clone(),
                js.clone(),
                RelayConfig {
                    checkpoint: RELAY_CHECKPOINT.to_owned(),
                    stream: names.own_stream,
                    subject_prefix: names.own_subjects,
                    batch_size: RELAY_BATCH,
                    producer,
                    replicas,
                },
            );
            tasks.spawn("relay", relay.run(tasks.shutdown().clone()));
            let consumer = Consumer::new(
                store,
                js,
                ConsumerConfig {
                    stream: names.other_stream,
                    subject_prefix: names.other_subjects,
                    durable: names.durable,
                    dead_letter_subject: names.dead_letter_subject,
                    max_deliver: MAX_DELIVER,
                    newer_schema_delay: newer_schema_retry,
                    replicas,
                },
                reactions,
            )
            .with_gaps(gaps);
            tasks.spawn("consumer", consumer.run(tasks.shutdown().clone()));
        });
    }

    /// Runs a [`Projector`] for each projection of the service's own events that is kept
    /// from its own checkpoint rather than in the append's statement: one replica at a time
    /// applies it (leadership keyed by the checkpoint), the others stand by.
    pub fn run_projectors(&self, projections: Vec<Arc<dyn Projection>>) {
        for projection in projections {
            let projector = Projector::new(self.store.clone(), projection);
            self.tasks
                .spawn("projector", projector.run(self.tasks.shutdown().clone()));
        }
    }

    /// Binds the configured address and serves the service's `routes` (its handlers and
    /// their state) beside the shared ones; `targets` are the projections `/admin` can rebuild.
    /// A read model whose tables are empty while its events are not (a database restored from
    /// its events) is rebuilt first, so no read or inline write meets it without its rows.
    pub async fn serve<F>(self, targets: Vec<Target>, routes: F) -> anyhow::Result<Application>
    where
        F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    {
        for target in &targets {
            let rebuilt = rebuild_if_missing(&self.store, target, self.tasks.shutdown())
                .await
                .with_context(|| format!("building the missing {} read model", target.name()))?;
            if let Some(report) = rebuilt {
                tracing::info!(
                    projection = %report.projection,
                    events = report.events_read,
                    rows = report.rows_written,
                    "built a missing read model"
                );
            }
        }
        let rebuilds = Rebuilds::new(self.store.clone(), targets, self.tasks.shutdown().clone());
        let republisher = Republisher::new(
            self.store.clone(),
            nats::jetstream(self.nats.clone()),
            RelayConfig::new(
                self.names.own_stream.clone(),
                self.names.own_subjects.clone(),
            ),
        );
        let admin = self.common.admin_token().map(|token| {
            AdminState::new(rebuilds.clone(), move |candidate| token.matches(candidate))
                .with_republisher(republisher)
        });
        let readers = event_store::replay::readers(RELAY_CHECKPOINT, rebuilds.targets());
        let scrape = Scrape::new(self.name, self.pool.clone(), readers.clone());
        let health = Health {
            pool: self.pool.clone(),
            nats: self.nats,
            readers,
            ready_max_lag: self.common.ready_max_lag(),
            failures: self.tasks.failures().clone(),
            gaps: self.gaps.clone(),
        };
        let http_addr = self.http_addr;
        let keys = web::Data::new(Idempotency {
            pool: self.pool.clone(),
            retention: self.common.idempotency_retention.0,
        });
        idempotency::spawn_pruner(&self.tasks, self.pool.clone(), keys.retention);
        let listener =
            TcpListener::bind(http_addr).with_context(|| format!("binding {http_addr}"))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(keys.clone())
                // Inside the request middleware, so replayed answers carry the request id too.
                .wrap(from_fn(idempotency::middleware))
                .wrap(from_fn(request::middleware))
                .configure(error::extractors)
                .configure(routes.clone())
                .configure(|cfg| health::routes(cfg, health.clone()))
                .configure(|cfg| prometheus::routes(cfg, scrape.clone()))
                .configure(|cfg| {
                    if let Some(state) = &admin {
                        admin::routes(cfg, state.clone());
                    }
                })
                .default_service(web::to(not_found))
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(HTTP_SHUTDOWN_SECS)
        .run();
        tracing::info!(port, namespace = %self.common.events_namespace, "{} built", self.name);
        Ok(Application {
            port,
            server,
            tasks: self.tasks,
            pool: self.pool,
            rebuilds,
        })
    }
}

/// Any path no route matches.
async fn not_found(req: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// Declares the service's stream and the other's (same configuration on both sides, so
/// whichever service starts first creates it), retrying while NATS is unreachable. False
/// when stopped first.
async fn declare_streams(
    js: &jetstream::Context,
    names: &EventNames,
    replicas: usize,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::default();
    loop {
        let declare = async {
            let (own, other) = (nats::Declare::Own, nats::Declare::Other);
            nats::declare_stream(js, &names.own_stream, &names.own_subjects, replicas, own).await?;
            nats::declare_stream(
                js,
                &names.other_stream,
                &names.other_subjects,
                replicas,
                other,
            )
            .await
        };
        // While NATS is unreachable a request can wait long; shutdown must not.
        let declared = tokio::select! {
            _ = shutdown.cancelled() => return false,
            declared = tokio::time::timeout(STREAM_DECLARE_TIMEOUT, declare) => declared,
        };
        match declared {
            Ok(Ok(_)) => return true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot declare the JetStream streams; retrying");
            }
            Err(_) => tracing::warn!("NATS does not answer; retrying to declare the streams"),
        }
        backoff.wait(shutdown).await;
    }
}

/// A built service: listening, with its background tasks running, until stopped.
pub struct Application {
    port: u16,
    server: Server,
    tasks: Tasks,
    pool: PgPool,
    rebuilds: Rebuilds,
}

impl Application {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The service's database pool (tests inspect the store through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Cancelling this token stops the application as SIGTERM does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.tasks.shutdown().clone()
    }

    /// Serves until SIGTERM, Ctrl-C, the shutdown token, or a background task panicking;
    /// then stops accepting HTTP, lets in-flight requests finish, and drains the background
    /// tasks and any rebuild for a bounded time. An error when the server or a task failed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let shutdown = self.tasks.shutdown().clone();
        let mut served = None;
        tokio::select! {
            result = &mut server => served = Some(result),
            _ = stop_signal() => tracing::info!("stop signal received"),
            _ = shutdown.cancelled() => {}
        }
        tracing::info!("shutting down");
        handle.stop(true).await;
        let served = match served {
            Some(result) => result,
            None => server.await,
        };
        self.tasks.stop().await;
        // A rebuild stops between pages and drops its shadow tables; the live ones stay.
        if tokio::time::timeout(DRAIN, self.rebuilds.stop())
            .await
            .is_err()
        {
            tracing::warn!("a rebuild did not stop in time; exiting anyway");
        }
        self.pool.close().await;
        tracing::info!("stopped");
        served
            .context("the HTTP server task failed")?
            .context("the HTTP server failed")?;
        match self.tasks.failures().names().as_slice() {
            [] => Ok(()),
            failed => Err(anyhow::anyhow!(
                "background task {} panicked",
                failed.join(", ")
            )),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM. A handler that cannot be installed never fires.
async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// What a service's binary does with its command line: `serve` (the default) builds the
/// service with `build` and runs it until stopped; `replay` rebuilds the projections
/// `targets()` names against the service's database, migrated by `migrations()` first.
pub async fn main<S, B, F>(
    cli: Cli<S>,
    build: B,
    targets: fn() -> Vec<Target>,
    migrations: fn() -> Migrator,
) -> anyhow::Result<()>
where
    S: config::Service,
    B: FnOnce(Config<S>) -> F,
    F: std::future::Future<Output = anyhow::Result<Application>>,
{
    let common = &cli.config.common;
    let json = common.log_format == LogFormat::Json;
    // Kept until exit: it flushes exported spans.
    let _telemetry = logging::init(S::NAME, &common.log_filter, json);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = build(cli.config).await?;
            tracing::info!(port = app.port(), "{} serving", S::NAME);
            app.run_until_stopped().await
        }
        Command::Replay(args) => {
            let database_url = &cli.config.database_url;
            replay_cli::command(database_url, migrations(), &targets(), &args).await
        }
        Command::Republish(args) => republish::command(&cli.config, &args).await,
    }
}
