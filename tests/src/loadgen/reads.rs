//! Read throughput: `GET /orders/{id}` and `GET /catalog/products/{id}` from N connections back
//! to back, each beside its ceiling: a trivial actix-web handler serving JSON of the same size.

use std::sync::Arc;

use super::bench::{concurrently, Bench};
use super::commands::wait_confirmed;
use super::cpu::{self, Usage};
use super::memory::Resident;
use super::process::CeilingServer;
use super::report::{Reads, Throughput};
use super::schedule::closed_loop;

/// Distinct orders read at most (they rotate).
const MAX_ORDERS_READ: usize = 10_000;
/// Orders placed for the reads when the run placed none before.
const ORDERS_FOR_READS: usize = 1_000;

/// The two reads beside their ceilings, the ceiling server's own resident size, and where the
/// CPU went during each measurement.
pub async fn reads(
    bench: &mut Bench,
) -> anyhow::Result<(Vec<Reads>, Option<Resident>, Vec<(String, Usage)>)> {
    if bench.orders.len() < ORDERS_FOR_READS {
        place_orders_for_reads(bench).await?;
    }
    let api = &bench.api;
    let orders: Vec<String> = bench
        .orders
        .iter()
        .take(MAX_ORDERS_READ)
        .map(|id| api.order_url(*id))
        .collect();
    let products: Vec<String> = [
        &bench.client_products,
        &bench.probe_products,
        &bench.order_products,
    ]
    .into_iter()
    .flatten()
    .map(|id| api.catalog_url(*id))
    .collect();
    let order_body = api.get_text(&orders[0]).await?;
    let product_body = api.get_text(&products[0]).await?;
    let ceiling = CeilingServer::start(&order_body, &product_body).await?;

    // Each measurement right beside its ceiling, so the machine's other load hits both alike.
    let mut usage = Vec::new();
    let mut measure = |(t, u): (Throughput, Usage)| {
        usage.push((t.name.clone(), u));
        t
    };
    let order_reads = Reads {
        service: measure(get_loop(bench, "GET /orders/{id}", orders).await?),
        ceiling: measure(
            get_loop(
                bench,
                CEILING_ORDER,
                vec![format!("{}/order", ceiling.base_url)],
            )
            .await?,
        ),
        body_bytes: order_body.len(),
    };
    let product_reads = Reads {
        service: measure(get_loop(bench, "GET /catalog/products/{id}", products).await?),
        ceiling: measure(
            get_loop(
                bench,
                CEILING_PRODUCT,
                vec![format!("{}/product", ceiling.base_url)],
            )
            .await?,
        ),
        body_bytes: product_body.len(),
    };
    let ceiling_memory = Resident::of(ceiling.pid);
    Ok((vec![order_reads, product_reads], ceiling_memory, usage))
}

const CEILING_ORDER: &str = "trivial handler, order-sized JSON";
const CEILING_PRODUCT: &str = "trivial handler, product-sized JSON";

/// GETs the urls in turn from every client, back to back.
async fn get_loop(
    bench: &Bench,
    name: &str,
    urls: Vec<String>,
) -> anyhow::Result<(Throughput, Usage)> {
    let urls = Arc::new(urls);
    let before = bench.cpu_snapshot();
    let api = bench.api.clone();
    let plan = bench.closed_loop();
    let runs = closed_loop(plan, move |client, n| {
        let (api, urls) = (api.clone(), urls.clone());
        async move {
            let url = &urls[(client * 7919 + n as usize) % urls.len()];
            api.get_bytes(url).await
        }
    })
    .await;
    let usage = cpu::between(&before, &bench.cpu_snapshot());
    Ok((Throughput::from_runs(name, plan, &runs)?, usage))
}

async fn place_orders_for_reads(bench: &mut Bench) -> anyhow::Result<()> {
    let products = bench.order_products.clone();
    let placed = concurrently(0..ORDERS_FOR_READS, |i| {
        let api = bench.api.clone();
        let product = products[i % products.len()];
        async move { api.place_order("reader", product, 1).await }
    })
    .await?;
    wait_confirmed(bench, &placed).await?;
    bench.orders.extend(placed);
    Ok(())
}
