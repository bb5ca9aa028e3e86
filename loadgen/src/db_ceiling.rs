//! The database baseline for reads: a minimal actix-web + sqlx handler that runs exactly the
//! SELECT behind `GET /orders/{id}` and `GET /catalog/products/{id}` (order-service's
//! `projections::orders::find` and `projections::catalog::find`) against order-service's own
//! database, and serialises the row with serde_json into the same JSON the service answers.
//! No middleware, no logging, no `?min_version=`: what a read costs when it is nothing but its
//! query. Between the trivial ceiling (no database) and the service, it tells how much of the
//! gap is the database round trip and how much the service's own code.
//!
//! Run as `loadgen db-ceiling` in a process of its own, with actix's default worker count and a
//! tokio multi-threaded runtime like the services, and a pool of `--pool-size` connections made
//! as the services make theirs (same acquire timeout, same session settings).

use std::str::FromStr;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnectOptions;
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

/// order-service's `projections::orders::find`.
const ORDER: &str = "SELECT order_id, customer_id, status, lines, total_cents, rejection_reason, \
    version, placed_at FROM orders WHERE order_id = $1";
/// order-service's `projections::catalog::find`.
const PRODUCT: &str = "SELECT product_id, name, price_cents, stock_available, available, version \
    FROM catalog_products WHERE product_id = $1";

#[derive(Debug, Clone, clap::Args)]
pub struct DbCeilingArgs {
    #[arg(long)]
    pub port: u16,
    /// order-service's database.
    #[arg(long)]
    pub database_url: String,
    #[arg(long)]
    pub pool_size: u32,
}

/// A row of `orders`, decoded as the service decodes it.
#[derive(sqlx::FromRow)]
struct OrderRow {
    order_id: Uuid,
    customer_id: String,
    status: String,
    lines: Json<Vec<OrderLine>>,
    total_cents: i64,
    rejection_reason: Option<String>,
    version: i64,
    /// Decoded as the service decodes it, though no body shows it.
    #[allow(dead_code)]
    placed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OrderLine {
    product_id: Uuid,
    quantity: i64,
    unit_price_cents: i64,
}

/// The body of `GET /orders/{id}`, field for field.
#[derive(Debug, Serialize)]
struct OrderView {
    id: Uuid,
    customer_id: String,
    status: String,
    lines: Vec<OrderLine>,
    total_cents: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejection_reason: Option<String>,
    version: i64,
}

impl From<OrderRow> for OrderView {
    fn from(row: OrderRow) -> Self {
        OrderView {
            id: row.order_id,
            customer_id: row.customer_id,
            status: row.status,
            lines: row.lines.0,
            total_cents: row.total_cents,
            rejection_reason: row.rejection_reason,
            version: row.version,
        }
    }
}

/// A row of `catalog_products`, which is also the body of `GET /catalog/products/{id}` once
/// `product_id` is named `id`.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct ProductView {
    #[serde(rename = "id")]
    product_id: Uuid,
    name: String,
    price_cents: i64,
    stock_available: i64,
    available: bool,
    version: i64,
}

async fn order(pool: web::Data<PgPool>, id: web::Path<Uuid>) -> HttpResponse {
    let row: Result<Option<OrderRow>, _> = sqlx::query_as(ORDER)
        .bind(id.into_inner())
        .fetch_optional(pool.get_ref())
        .await;
    answer(row.map(|r| r.map(OrderView::from)))
}

async fn product(pool: web::Data<PgPool>, id: web::Path<Uuid>) -> HttpResponse {
    let row: Result<Option<ProductView>, _> = sqlx::query_as(PRODUCT)
        .bind(id.into_inner())
        .fetch_optional(pool.get_ref())
        .await;
    answer(row)
}

fn answer<T: Serialize>(row: Result<Option<T>, sqlx::Error>) -> HttpResponse {
    match row {
        Ok(Some(body)) => HttpResponse::Ok().json(body),
        Ok(None) => HttpResponse::NotFound().finish(),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().finish()
}

/// Connects the pool, then serves until killed.
pub fn serve(args: DbCeilingArgs) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async move {
        let options = PgConnectOptions::from_str(&args.database_url)
            .context("--database-url is not a Postgres URL")?;
        // The services' own pool settings, so the baseline differs from them only in its code.
        let pool = event_store::pool::options(args.pool_size.max(1))
            .connect_with(event_store::pool::with_session_settings(options))
            .await
            .context("connecting to the database")?;
        let pool = web::Data::new(pool);
        HttpServer::new(move || {
            App::new()
                .app_data(pool.clone())
                .route("/orders/{id}", web::get().to(order))
                .route("/catalog/products/{id}", web::get().to(product))
                .route("/health", web::get().to(health))
        })
        .bind(("127.0.0.1", args.port))?
        .run()
        .await?;
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn the_bodies_have_the_services_fields_in_the_services_order() {
        let id = Uuid::nil();
        let order = OrderView {
            id,
            customer_id: "probe".into(),
            status: "confirmed".into(),
            lines: vec![OrderLine {
                product_id: id,
                quantity: 1,
                unit_price_cents: 1000,
            }],
            total_cents: 1000,
            rejection_reason: None,
            version: 2,
        };
        assert_eq!(
            serde_json::to_string(&order).unwrap(),
            format!(
                r#"{{"id":"{id}","customer_id":"probe","status":"confirmed","lines":[{{"product_id":"{id}","quantity":1,"unit_price_cents":1000}}],"total_cents":1000,"version":2}}"#
            )
        );
        let product = ProductView {
            product_id: id,
            name: "stock 0".into(),
            price_cents: 1000,
            stock_available: 5,
            available: true,
            version: 3,
        };
        assert_eq!(
            serde_json::to_string(&product).unwrap(),
            format!(
                r#"{{"id":"{id}","name":"stock 0","price_cents":1000,"stock_available":5,"available":true,"version":3}}"#
            )
        );
    }
}
