//! How the load generator sees a change arrive: the read-model table watcher, or HTTP polling
//! (plain or `?min_version=` long polls).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;
use uuid::Uuid;

use super::{left, BACKOFF_FRACTION};
use crate::api::{Api, OrderState};
use crate::bench::Bench;
use crate::cli::Probe;
use crate::watch::{NotVisible, Table, Watcher};

/// How the load generator sees a change arrive.
#[derive(Clone)]
pub(super) enum Watch {
    Table(Arc<Watcher>),
    Http { long_poll: bool, interval: Duration },
}

impl Watch {
    pub(super) async fn new(bench: &Bench, table: Table) -> anyhow::Result<Watch> {
        let interval = bench.args.poll_interval();
        Ok(match bench.args.probe {
            Probe::Table => {
                let url = &bench.system.orders_db.url;
                let (watcher, backend) = Watcher::connect(url, table, interval).await?;
                bench.set_probe_backend(backend);
                Watch::Table(Arc::new(watcher))
            }
            Probe::Http => Watch::Http {
                long_poll: false,
                interval,
            },
            Probe::LongPoll => Watch::Http {
                long_poll: true,
                interval,
            },
        })
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Watch::Table(_) => "read-model table query".into(),
            Watch::Http {
                long_poll: false,
                interval,
            } => format!("HTTP GET polling every {interval:?}+"),
            Watch::Http {
                long_poll: true, ..
            } => "HTTP long poll (?min_version)".into(),
        }
    }

    pub(super) fn table_queries(&self) -> u64 {
        match self {
            Watch::Table(w) => w.queries(),
            Watch::Http { .. } => 0,
        }
    }

    /// HTTP only: calls `seen(long_poll)` until it answers true, or gives up after `give_up`;
    /// when, and how many GETs. Polling reads at once, then every `interval` (tokio's timer
    /// has 1 ms granularity), or a twentieth of the time waited if that is longer.
    pub(super) async fn http_until<F, Fut>(
        &self,
        give_up: Instant,
        seen: F,
    ) -> anyhow::Result<(Instant, u64)>
    where
        F: Fn(bool) -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        let Watch::Http {
            long_poll,
            interval,
        } = *self
        else {
            bail!("not an HTTP probe");
        };
        let start = Instant::now();
        let mut reads = 0;
        loop {
            reads += 1;
            if seen(long_poll).await? {
                return Ok((Instant::now(), reads));
            }
            if Instant::now() > give_up {
                let waited = start.elapsed();
                return Err(NotVisible(format!("not visible after {waited:?}")).into());
            }
            if !long_poll {
                let backoff = start.elapsed() / BACKOFF_FRACTION;
                tokio::time::sleep(interval.max(backoff)).await;
            }
        }
    }

    /// Until the catalogue serves `product` at `version` or later, at most until `give_up`.
    pub(super) async fn catalogue(
        &self,
        api: &Api,
        product: Uuid,
        version: i64,
        give_up: Instant,
    ) -> anyhow::Result<(Instant, u64)> {
        if let Watch::Table(watcher) = self {
            return Ok((watcher.wait(product, version, left(give_up)).await?.at, 0));
        }
        self.http_until(give_up, |long_poll| {
            let api = api.clone();
            async move {
                let min = long_poll.then_some(version);
                Ok(api.catalog_version(product, min).await? >= version)
            }
        })
        .await
    }

    /// Until order-service serves `order` confirmed (its version 2), at most until `give_up`.
    pub(super) async fn confirmed(
        &self,
        api: &Api,
        order: Uuid,
        give_up: Instant,
    ) -> anyhow::Result<(Instant, u64)> {
        if let Watch::Table(watcher) = self {
            let seen = watcher.wait(order, 2, left(give_up)).await?;
            if seen.status.as_deref() != Some("confirmed") {
                bail!("order {order} was {:?}, not confirmed", seen.status);
            }
            return Ok((seen.at, 0));
        }
        self.http_until(give_up, |long_poll| {
            let api = api.clone();
            async move {
                match api.order_state(order, long_poll.then_some(2)).await? {
                    OrderState::Confirmed => Ok(true),
                    OrderState::Other => bail!("order {order} was not confirmed"),
                    OrderState::Missing | OrderState::Pending => Ok(false),
                }
            }
        })
        .await
    }
}
