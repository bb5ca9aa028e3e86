//! Start-up: bind the listener (port 0 in tests), start the NATS watchers and the scraper,
//! serve until stopped.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{routes, State};
use crate::hub::Hub;
use crate::{cluster, nats, scrape};

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(config.http_addr)
            .with_context(|| format!("cannot listen on {}", config.http_addr))?;
        let port = listener.local_addr()?.port();
        let hub = Arc::new(Hub::default());
        let shutdown = CancellationToken::new();
        let client = nats::start(&config, hub.clone(), shutdown.clone()).await?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .context("HTTP client")?;
        tokio::spawn(cluster::run(
            config.nats_url.clone(),
            config
                .services()
                .map(|s| (s.service, s.stream))
                .into_iter()
                .collect(),
            client.clone(),
            hub.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(scrape::run(
            config.services(),
            http.clone(),
            client,
            hub.clone(),
            shutdown.clone(),
        ));
        let [orders, products] = config.services();
        let state = web::Data::new(State {
            hub,
            http,
            orders_url: orders.base_url,
            products_url: products.base_url,
        });
        let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
            .listen(listener)?
            .shutdown_timeout(2)
            .run();
        Ok(Application {
            port,
            server,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM (actix-web handles both), then stops the watchers.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = self.server.await;
        self.shutdown.cancel();
        result.context("HTTP server")
    }
}
