//! Command throughput: `POST /orders` and `POST /products/{id}/price` from N clients back to
//! back, then the wait until the system has caught up with what they wrote.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::bail;
use tokio::time::Instant;
use uuid::Uuid;

use super::api::OrderState;
use super::bench::{concurrently, Bench};
use super::cpu::{self, Usage};
use super::report::{Drain, Throughput};
use super::schedule::closed_loop;

/// Places one-line orders, spread over the stock products; then waits for their confirmation.
/// Also where the CPU went during the burst (not the drain). With `drain`, waits until the
/// saga has confirmed them all and says how long that took.
pub async fn place_orders(
    bench: &mut Bench,
    drain: bool,
) -> anyhow::Result<(Throughput, Option<Drain>, Usage)> {
    let api = bench.api.clone();
    let products = bench.order_products.clone();
    let plan = bench.closed_loop();
    // Counts the warmup's orders too: the saga has to handle them all.
    let placed_total = Arc::new(AtomicU64::new(0));
    let counter = placed_total.clone();
    let started = Instant::now();
    let before = bench.cpu_snapshot();
    let runs = closed_loop(plan, move |client, n| {
        let api = api.clone();
        let counter = counter.clone();
        let product = products[(client + n as usize) % products.len()];
        async move {
            let order = api
                .place_order(&format!("bench-{client}"), product, 1)
                .await?;
            counter.fetch_add(1, Ordering::Relaxed);
            anyhow::Ok(order)
        }
    })
    .await;
    let placed_for = started.elapsed();
    let usage = cpu::between(&before, &bench.cpu_snapshot());
    let throughput = Throughput::from_runs("POST /orders", plan, &runs)?;
    // Every client's last order: the saga handles orders in about the order they came, so
    // these are confirmed last.
    let last: Vec<Uuid> = runs
        .iter()
        .filter_map(|run| run.iter().rev().find_map(|(_, r)| r.as_ref().ok().copied()))
        .collect();
    let placed: Vec<Uuid> = runs
        .into_iter()
        .flatten()
        .filter_map(|(_, r)| r.ok())
        .collect();
    bench.orders.extend(placed);
    if !drain {
        return Ok((throughput, None, usage));
    }
    wait_confirmed(bench, &last).await?;
    let drain = Drain {
        name: "orders placed -> all confirmed".into(),
        count: placed_total.load(Ordering::Relaxed),
        placed_for,
        took: started.elapsed(),
    };
    Ok((throughput, Some(drain), usage))
}

/// Waits until each order is confirmed (server-side waits, so few requests).
pub async fn wait_confirmed(bench: &Bench, orders: &[Uuid]) -> anyhow::Result<()> {
    let deadline = Instant::now() + bench.drain_timeout();
    concurrently(orders.iter().copied(), |order| {
        let api = bench.api.clone();
        async move {
            loop {
                match api.order_state(order, Some(2)).await? {
                    OrderState::Confirmed => return Ok(()),
                    OrderState::Other => bail!("order {order} was not confirmed"),
                    OrderState::Missing | OrderState::Pending if Instant::now() > deadline => {
                        bail!("order {order} still not confirmed after the drain timeout")
                    }
                    OrderState::Missing | OrderState::Pending => {}
                }
            }
        }
    })
    .await?;
    Ok(())
}

/// Changes prices, each client its own product (so no two requests conflict), alternating
/// between two prices so every request is a real change; then waits for the catalogue.
pub async fn change_prices(bench: &Bench) -> anyhow::Result<(Throughput, Drain, Usage)> {
    let api = bench.api.clone();
    let products = bench.client_products.clone();
    let plan = bench.closed_loop();
    let started = Instant::now();
    let before = bench.cpu_snapshot();
    let runs = closed_loop(plan, move |client, n| {
        let api = api.clone();
        let product = products[client % products.len()];
        async move {
            let version = api.change_price(product, 2_000 + (n % 2) as i64).await?;
            anyhow::Ok((product, version))
        }
    })
    .await;
    let placed_for = started.elapsed();
    let usage = cpu::between(&before, &bench.cpu_snapshot());
    let throughput = Throughput::from_runs("POST /products/{id}/price", plan, &runs)?;
    let last: Vec<(Uuid, i64)> = runs
        .iter()
        .filter_map(|run| run.iter().rev().find_map(|(_, r)| r.as_ref().ok().copied()))
        .collect();
    bench.catalogue_has(last.iter().copied()).await?;
    let total = last.iter().map(|(_, v)| (*v - 1) as u64).sum();
    let drain = Drain {
        name: "price changes -> all in the catalogue".into(),
        count: total,
        placed_for,
        took: started.elapsed(),
    };
    Ok((throughput, drain, usage))
}
