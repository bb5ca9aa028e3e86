//! The process's Prometheus recorder and `GET /metrics`.
//!
//! Counters and histograms (appends, consumed messages, dead letters, HTTP durations) live in
//! one recorder installed once per process. The store's gauges (head, relay and projection
//! checkpoints and lags) are measured from the database at each scrape and rendered from a
//! recorder made for that scrape, so they are never stale and never mixed between two
//! applications in one process (tests run many).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use event_store::metrics::{names, Reader, StoreGauges};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

use crate::request::HTTP_DURATION;

/// Upper bounds of the HTTP duration buckets, in seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (the first call does; later calls return its handle).
/// Every series carries `service="<service>"`.
pub fn install(service: &str) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = match builder(service).install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    // Another recorder is installed: ours renders empty, nothing breaks.
                    tracing::warn!(error = %e, "cannot install the Prometheus recorder");
                    builder(service).build_recorder().handle()
                }
            };
            event_store::metrics::describe_counters();
            event_store::repair::metrics::describe();
            metrics::describe_histogram!(
                HTTP_DURATION,
                metrics::Unit::Seconds,
                "HTTP requests by method, route pattern and status class"
            );
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread; scrapes still drain");
            }
            handle
        })
        .clone()
}

fn builder(service: &str) -> PrometheusBuilder {
    PrometheusBuilder::new()
        .add_global_label("service", service)
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), HTTP_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(names::CONSUMER_BATCH_MESSAGES.to_owned()),
                event_store::metrics::BATCH_MESSAGES_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(names::CONSUMER_BATCH_SECONDS.to_owned()),
                event_store::metrics::BATCH_SECONDS_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(event_store::repair::metrics::SECONDS.to_owned()),
                event_store::repair::metrics::SECONDS_BUCKETS,
            )
        })
        .expect("the bucket lists are not empty")
}

/// What `GET /metrics` renders: the process's recorder and one store's gauges.
#[derive(Clone)]
pub struct Scrape {
    service: String,
    handle: PrometheusHandle,
    pool: PgPool,
    readers: Arc<Vec<Reader>>,
}

impl Scrape {
    /// Installs the process's recorder if needed.
    pub fn new(service: &str, pool: PgPool, readers: Vec<Reader>) -> Self {
        Scrape {
            service: service.to_owned(),
            handle: install(service),
            pool,
            readers: Arc::new(readers),
        }
    }

    /// The Prometheus text: the process's series, then the store's gauges. When the database
    /// does not answer, the gauges are left out (and their absence is the signal).
    pub async fn render(&self) -> String {
        let mut text = self.handle.render();
        match StoreGauges::measure(&self.pool, &self.readers).await {
            Ok(gauges) => {
                let recorder = PrometheusBuilder::new()
                    .add_global_label("service", self.service.as_str())
                    .build_recorder();
                metrics::with_local_recorder(&recorder, || gauges.record());
                text.push_str(&recorder.handle().render());
            }
            Err(e) => tracing::warn!(error = %e, "cannot measure the store's lag for /metrics"),
        }
        text
    }
}

/// Registers `GET /metrics`.
pub fn routes(cfg: &mut web::ServiceConfig, scrape: Scrape) {
    cfg.app_data(web::Data::new(scrape))
        .service(web::resource("/metrics").route(web::get().to(metrics)));
}

/// Metrics in the Prometheus text format: appends, consumed messages and dead letters, HTTP
/// durations, and the relay's and projections' checkpoints and lag (measured now).
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4",
        content_type = "text/plain", body = String)))]
pub async fn metrics(scrape: web::Data<Scrape>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(scrape.render().await)
}

/// The value of the sample `name` whose labels include `labels`, from Prometheus text
/// (for tests and probes that read `/metrics`).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let found: HashMap<&str, &str> = label_text
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            let matches = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| found.get(k).is_some_and(|f| f == v));
            matches.then(|| value.parse().ok()).flatten()
        })
}
