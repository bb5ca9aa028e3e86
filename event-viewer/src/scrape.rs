//! Once a second: each service's `/metrics`, and its durable consumer's lag from JetStream;
//! then the status goes to every open page.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceNames;
use crate::hub::Hub;
use crate::nats::consumer_lag;
use crate::prom::{self, ServiceMetrics};

const EVERY: Duration = Duration::from_secs(1);
/// A scrape slower than this counts as the service being down.
const TIMEOUT: Duration = Duration::from_millis(900);

pub async fn run(
    services: [ServiceNames; 2],
    http: reqwest::Client,
    nats: async_nats::Client,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let js = jetstream::new(nats.clone());
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let nats_up = nats.connection_state() == async_nats::connection::State::Connected;
        let scrapes = services.iter().map(|s| scrape(&http, s));
        let results = futures::future::join_all(scrapes).await;
        for (names, result) in services.iter().zip(results) {
            let other = services
                .iter()
                .find(|o| o.service != names.service)
                .map(|o| o.stream.clone());
            let lag = match other {
                Some(stream) if nats_up => tokio::time::timeout(
                    TIMEOUT,
                    consumer_lag(&js, &stream, names.durable_on_other),
                )
                .await
                .ok()
                .and_then(Result::ok),
                _ => None,
            };
            hub.update_service(names.service, |status| {
                status.consumer_lag = lag;
                match result {
                    Ok(metrics) => {
                        status.up = true;
                        status.error = None;
                        status.metrics = metrics;
                    }
                    Err(e) => {
                        status.up = false;
                        status.error = Some(format!("{e:#}"));
                    }
                }
            });
        }
        // Also sends the status to every open page.
        hub.set_nats(nats_up);
    }
}

async fn scrape(http: &reqwest::Client, names: &ServiceNames) -> anyhow::Result<ServiceMetrics> {
    let response = http
        .get(format!("{}/metrics", names.base_url))
        .timeout(TIMEOUT)
        .send()
        .await?
        .error_for_status()?;
    let text = response.text().await?;
    Ok(ServiceMetrics::from_samples(&prom::parse(&text)))
}
