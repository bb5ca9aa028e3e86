//! Read throughput: `GET /orders/{id}` and `GET /catalog/products/{id}` from N connections back
//! to back, each beside two baselines: the same query behind a minimal handler on the same
//! database ([`super::db_ceiling`]), and a trivial actix-web handler serving JSON of the same
//! size with no database at all ([`super::ceiling`]).

use std::sync::Arc;

use uuid::Uuid;

use super::bench::{concurrently, Bench};
use super::commands::wait_confirmed;
use super::cpu::{self, Usage};
use super::memory::Resident;
use super::process::{CeilingServer, HelperServer};
use super::report::{Reads, Throughput};
use super::schedule::closed_loop;

/// Distinct orders read at most (they rotate).
const MAX_ORDERS_READ: usize = 10_000;
/// Orders placed for the reads when the run placed none before.
const ORDERS_FOR_READS: usize = 1_000;

/// The reads, the helper servers' resident sizes, where the CPU went during each measurement,
/// and what the reader should know about the database baseline.
pub struct ReadsRun {
    pub reads: Vec<Reads>,
    pub ceiling_memory: Option<Resident>,
    pub db_ceiling_memory: Option<Resident>,
    pub usage: Vec<(String, Usage)>,
    pub notes: Vec<String>,
}

pub async fn reads(bench: &mut Bench) -> anyhow::Result<ReadsRun> {
    if bench.orders.len() < ORDERS_FOR_READS {
        place_orders_for_reads(bench).await?;
    }
    let orders: Vec<Uuid> = bench.orders.iter().take(MAX_ORDERS_READ).copied().collect();
    let products: Vec<Uuid> = [
        &bench.client_products,
        &bench.probe_products,
        &bench.order_products,
    ]
    .into_iter()
    .flatten()
    .copied()
    .collect();
    let api = &bench.api;
    let order_body = api.get_text(&api.order_url(orders[0])).await?;
    let product_body = api.get_text(&api.catalog_url(products[0])).await?;
    let ceiling = CeilingServer::start(&order_body, &product_body).await?;
    let mut notes = Vec::new();
    let db = db_baseline(bench, &orders[0], &products[0], &order_body, &product_body).await;
    let db = match db {
        Ok((server, note)) => {
            println!("  {note}");
            notes.push(note);
            Some(server)
        }
        Err(e) => {
            let note = format!("no database baseline for the reads: {e:#}");
            println!("  {note}");
            notes.push(note);
            None
        }
    };
    let order_paths: Vec<String> = orders.iter().map(|id| format!("/orders/{id}")).collect();
    let product_paths: Vec<String> = products
        .iter()
        .map(|id| format!("/catalog/products/{id}"))
        .collect();
    let at = |base: &str, paths: &[String]| -> Vec<String> {
        paths.iter().map(|p| format!("{base}{p}")).collect()
    };

    // Each measurement right beside its baselines, so the machine's other load hits all alike.
    let mut usage = Vec::new();
    let mut measure = |(t, u): (Throughput, Usage)| {
        usage.push((t.name.clone(), u));
        t
    };
    let mut pairs = Vec::new();
    for (name, paths, body, db_name, ceiling_name, ceiling_path) in [
        (
            "GET /orders/{id}",
            &order_paths,
            &order_body,
            DB_ORDER,
            CEILING_ORDER,
            "/order",
        ),
        (
            "GET /catalog/products/{id}",
            &product_paths,
            &product_body,
            DB_PRODUCT,
            CEILING_PRODUCT,
            "/product",
        ),
    ] {
        let service = measure(get_loop(bench, name, at(&api.orders, paths)).await?);
        let db_baseline = match &db {
            Some(db) => Some(measure(
                get_loop(bench, db_name, at(&db.base_url, paths)).await?,
            )),
            None => None,
        };
        let ceiling_urls = vec![format!("{}{ceiling_path}", ceiling.base_url)];
        let ceiling = measure(get_loop(bench, ceiling_name, ceiling_urls).await?);
        pairs.push(Reads {
            service,
            db_baseline,
            ceiling,
            body_bytes: body.len(),
        });
    }
    Ok(ReadsRun {
        reads: pairs,
        ceiling_memory: Resident::of(ceiling.pid),
        db_ceiling_memory: db.as_ref().and_then(|d| Resident::of(d.pid)),
        usage,
        notes,
    })
}

const DB_ORDER: &str = "database baseline, the order's SELECT";
const DB_PRODUCT: &str = "database baseline, the product's SELECT";
const CEILING_ORDER: &str = "trivial handler, order-sized JSON";
const CEILING_PRODUCT: &str = "trivial handler, product-sized JSON";

/// Starts the database baseline on order-service's database and checks that it answers what
/// the service answers for one order and one product; says so (or how it differs).
async fn db_baseline(
    bench: &Bench,
    order: &Uuid,
    product: &Uuid,
    order_body: &str,
    product_body: &str,
) -> anyhow::Result<(HelperServer, String)> {
    let pool = bench.args.pool_size;
    let server = HelperServer::start_db(&bench.system.orders_db.url, pool).await?;
    let api = &bench.api;
    let mine = [
        api.get_text(&format!("{}/orders/{order}", server.base_url))
            .await?,
        api.get_text(&format!("{}/catalog/products/{product}", server.base_url))
            .await?,
    ];
    let same = |a: &str, b: &str| {
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
        parse(a).is_some() && parse(a) == parse(b)
    };
    let what = if same(&mine[0], order_body) && same(&mine[1], product_body) {
        "answers the same JSON as the service".to_owned()
    } else {
        format!(
            "answers JSON that differs from the service's: {} and {} against {order_body} and \
             {product_body}",
            mine[0], mine[1]
        )
    };
    let note = format!(
        "database baseline: the service's own SELECT on order-service's database behind a \
         minimal actix-web + sqlx handler, pool of {pool} connections (--pool-size; the \
         services were given DATABASE_POOL_SIZE={pool}, which a service that does not read it \
         ignores, keeping its own pool of 10); it {what}"
    );
    Ok((server, note))
}

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
