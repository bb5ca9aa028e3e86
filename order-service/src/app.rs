//! Wiring: database, NATS, the HTTP server and the background tasks, and their graceful stop.
//!
//! Background tasks, each stopped by one cancellation token and awaited through one tracker:
//! - the store's notifier (LISTEN/NOTIFY between processes),
//! - the relay: this service's events to `<ns>_order_events`,
//! - the consumer of `<ns>_product_events` with the catalogue projection and the saga reaction;
//! - and, when started over `/admin`, projection rebuilds (`crate::replay`).

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use async_nats::jetstream;
use event_store::consumer::{Consumer, ConsumerConfig, Reaction};
use event_store::replay::Rebuilds;
use event_store::{nats, EventStore, Relay, RelayConfig};
use futures::FutureExt;
use service_kit::admin::{self, AdminState};
use service_kit::prometheus::{self, Scrape};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, request_id, AppState};
use crate::config::{Config, NatsNames, SERVICE_NAME};
use crate::db;
use crate::projections::catalog::CatalogProjection;
use crate::projections::orders::OrdersProjection;
use crate::reactions::reservation::ReservationOutcome;
use crate::replay;

/// Redeliveries of one message before the consumer gives up on it.
const MAX_DELIVER: i64 = 10;
/// How long in-flight requests get to finish on shutdown.
const HTTP_SHUTDOWN_TIMEOUT_SECS: u64 = 10;
/// The relay's checkpoint name (also where `/metrics` and readiness read its lag).
const RELAY_CHECKPOINT: &str = "relay";

/// A built service: the listener is bound and the database migrated, nothing runs yet.
pub struct Application {
    port: u16,
    server: Server,
    store: EventStore,
    js: jetstream::Context,
    names: NatsNames,
    rebuilds: Rebuilds,
    shutdown: CancellationToken,
}

impl Application {
    /// Creates the database if needed, migrates it, connects NATS (in the background: the
    /// service starts and takes writes while NATS is down) and binds `config.http_addr`
    /// (port 0 picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let pool = db::connect(&config.database_url, config.database_pool_size).await?;
        db::migrate(&pool).await?;
        // Orders are this service's own aggregates: their read model is written in the
        // transaction of every append, so a client reads its own writes at once.
        let store = EventStore::new(pool.clone()).with_inline(vec![Arc::new(OrdersProjection)]);
        let client = nats::connect(&config.nats_url, config.nats_login.login()?.as_ref())
            .await
            .context("connecting to NATS")?;
        let js = jetstream::new(client.clone());
        let shutdown = CancellationToken::new();
        let rebuilds = Rebuilds::new(store.clone(), replay::targets(), shutdown.clone());
        let admin = config.admin_token().map(|token| {
            AdminState::new(rebuilds.clone(), move |candidate| token.matches(candidate))
        });
        let readers = event_store::replay::readers(RELAY_CHECKPOINT, rebuilds.targets());
        let scrape = Scrape::new(SERVICE_NAME, pool.clone(), readers.clone());
        let state = web::Data::new(AppState {
            pool,
            store: store.clone(),
            nats: client,
            readers,
            ready_max_lag: config.ready_max_lag(),
        });
        let listener = TcpListener::bind(config.http_addr)
            .with_context(|| format!("binding {}", config.http_addr))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(request_id::middleware))
                .configure(api::configure)
                .configure(|cfg| prometheus::routes(cfg, scrape.clone()))
                .configure(|cfg| {
                    if let Some(state) = &admin {
                        admin::routes(cfg, state.clone());
                    }
                })
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(HTTP_SHUTDOWN_TIMEOUT_SECS)
        .run();
        tracing::info!(port, namespace = %config.events_namespace, "order-service built");
        Ok(Application {
            port,
            server,
            store,
            js,
            names: config.nats_names(),
            rebuilds,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancelling this token stops the application as SIGTERM does.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves and runs the background tasks until SIGTERM, Ctrl-C, the shutdown token, or a
    /// background task failing. Then stops accepting HTTP, lets in-flight requests finish,
    /// stops the background tasks and waits for them.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let rebuilds = self.rebuilds.clone();
        let tasks = TaskTracker::new();
        let failure = Arc::new(Mutex::new(None));
        self.spawn_background(&tasks, &failure);
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let mut server_result = None;
        tokio::select! {
            _ = stop_signal() => tracing::info!("stop signal received"),
            _ = shutdown.cancelled() => {}
            result = &mut server => server_result = Some(result),
        }
        tracing::info!("shutting down");
        handle.stop(true).await;
        let server_result = match server_result {
            Some(result) => result,
            None => server.await,
        };
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        // A rebuild stops between pages and drops its shadow tables; the live ones stay.
        rebuilds.stop().await;
        tracing::info!("stopped");
        server_result
            .context("the HTTP server task failed")?
            .context("the HTTP server failed")?;
        match failure.lock().ok().and_then(|mut f| f.take()) {
            Some(task) => Err(anyhow::anyhow!("background task {task} panicked")),
            None => Ok(()),
        }
    }

    fn spawn_background(&self, tasks: &TaskTracker, failure: &Arc<Mutex<Option<&'static str>>>) {
        let spawn = |name: &'static str, task: futures::future::BoxFuture<'static, ()>| {
            let (shutdown, failure) = (self.shutdown.clone(), failure.clone());
            tasks.spawn(async move {
                // A panicking task would leave the service half alive (serving reads that never
                // advance); stopping lets the orchestrator restart it whole.
                if std::panic::AssertUnwindSafe(task)
                    .catch_unwind()
                    .await
                    .is_err()
                {
                    tracing::error!(task = name, "background task panicked; stopping");
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(name);
                    }
                    shutdown.cancel();
                }
            });
        };
        let (store, js, names, token) = (
            self.store.clone(),
            self.js.clone(),
            self.names.clone(),
            self.shutdown.clone(),
        );

        let notifier = store.spawn_notifier(token.clone());
        spawn(
            "notifier",
            Box::pin(async move {
                let _ = notifier.await;
            }),
        );

        let relay = Relay::new(
            store.clone(),
            js.clone(),
            RelayConfig {
                checkpoint: RELAY_CHECKPOINT.to_owned(),
                stream: names.order_stream.clone(),
                subject_prefix: names.order_subjects.clone(),
                batch_size: 500,
            },
        );
        spawn("relay", Box::pin(relay.run(token.clone())));

        // The reaction first: its append draws the transaction's id (and so its positions),
        // and the later that happens, the rarer a concurrent append makes it conflict.
        let handlers: Vec<Arc<dyn Reaction>> = vec![
            Arc::new(ReservationOutcome::new(store.clone())),
            Arc::new(CatalogProjection),
        ];
        let consumer_config = ConsumerConfig {
            stream: names.product_stream.clone(),
            subject_prefix: names.product_subjects.clone(),
            durable: names.durable.clone(),
            dead_letter_subject: names.dead_letter_subject.clone(),
            max_deliver: MAX_DELIVER,
        };
        spawn(
            "consumer",
            Box::pin(async move {
                if ensure_streams(&js, &names, &token).await {
                    Consumer::new(store, js, consumer_config, handlers)
                        .run(token)
                        .await;
                }
            }),
        );
    }
}

/// Declares this service's stream and product-service's (same configuration on both sides,
/// so whichever service starts first creates it), retrying while NATS is unreachable. False
/// when stopped first.
async fn ensure_streams(
    js: &jetstream::Context,
    names: &NatsNames,
    shutdown: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        let declared = async {
            nats::ensure_stream(js, &names.order_stream, &names.order_subjects).await?;
            nats::ensure_stream(js, &names.product_stream, &names.product_subjects).await
        };
        match declared.await {
            Ok(_) => return true,
            Err(e) => tracing::warn!(error = %e, "cannot declare the JetStream streams; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
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
