//! The services' HTTP API as the load generator calls it. Each call checks the status it must
//! get, so anything else is counted as an error, never as a fast success.

use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

/// Every request gives up after this; a timeout is an error in the figures.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections are dropped before actix's 5 s keep-alive closes them from its side: a
/// request sent on a connection the server is closing fails, and a POST is not retried.
const IDLE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub products: String,
    pub orders: String,
}

#[derive(Deserialize)]
struct Versioned {
    id: Uuid,
    version: i64,
}

#[derive(Deserialize)]
struct Order {
    status: String,
}

/// Where an order stands in the read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    Missing,
    Pending,
    Confirmed,
    Other,
}

impl Api {
    pub fn new(products: &str, orders: &str) -> anyhow::Result<Api> {
        Ok(Api {
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .pool_idle_timeout(IDLE)
                .build()?,
            products: products.to_owned(),
            orders: orders.to_owned(),
        })
    }

    async fn post(
        &self,
        url: String,
        body: serde_json::Value,
        want: u16,
    ) -> anyhow::Result<Versioned> {
        let response = self.http.post(&url).json(&body).send().await?;
        let status = response.status().as_u16();
        if status != want {
            let text = response.text().await.unwrap_or_default();
            bail!("POST {url}: {status} {text}");
        }
        response
            .json()
            .await
            .with_context(|| format!("POST {url}: body"))
    }

    /// Creates a product; its id.
    pub async fn create_product(
        &self,
        name: &str,
        price_cents: i64,
        stock: i64,
    ) -> anyhow::Result<Uuid> {
        let body = json!({ "name": name, "price_cents": price_cents, "stock": stock });
        Ok(self
            .post(format!("{}/products", self.products), body, 201)
            .await?
            .id)
    }

    /// Creates a product; its id and the product stream's version the write produced.
    pub async fn create_product_versioned(
        &self,
        name: &str,
        price_cents: i64,
        stock: i64,
    ) -> anyhow::Result<(Uuid, i64)> {
        let body = json!({ "name": name, "price_cents": price_cents, "stock": stock });
        let created = self
            .post(format!("{}/products", self.products), body, 201)
            .await?;
        Ok((created.id, created.version))
    }

    /// The version product-service's own read model serves for `product` (`GET
    /// /products/{id}`, no `min_version`); `None` while it answers 404.
    pub async fn product_version(&self, product: Uuid) -> anyhow::Result<Option<i64>> {
        let url = format!("{}/products/{product}", self.products);
        let response = self.http.get(&url).send().await?;
        match response.status().as_u16() {
            200 => Ok(Some(response.json::<Versioned>().await?.version)),
            404 => Ok(None),
            status => bail!("GET {url}: {status}"),
        }
    }

    /// Sets a product's price; the product stream's version after the change.
    pub async fn change_price(&self, product: Uuid, price_cents: i64) -> anyhow::Result<i64> {
        let url = format!("{}/products/{product}/price", self.products);
        Ok(self
            .post(url, json!({ "price_cents": price_cents }), 200)
            .await?
            .version)
    }

    /// Places an order of one line; the order's id.
    pub async fn place_order(
        &self,
        customer: &str,
        product: Uuid,
        quantity: i64,
    ) -> anyhow::Result<Uuid> {
        let body = json!({
            "customer_id": customer,
            "lines": [{ "product_id": product, "quantity": quantity }],
        });
        Ok(self
            .post(format!("{}/orders", self.orders), body, 201)
            .await?
            .id)
    }

    pub fn catalog_url(&self, product: Uuid) -> String {
        format!("{}/catalog/products/{product}", self.orders)
    }

    pub fn order_url(&self, order: Uuid) -> String {
        format!("{}/orders/{order}", self.orders)
    }

    /// The version order-service's catalogue serves for `product`; 0 while it has none.
    pub async fn catalog_version(
        &self,
        product: Uuid,
        min_version: Option<i64>,
    ) -> anyhow::Result<i64> {
        let mut url = self.catalog_url(product);
        if let Some(v) = min_version {
            url = format!("{url}?min_version={v}");
        }
        let response = self.http.get(&url).send().await?;
        match response.status().as_u16() {
            200 => Ok(response.json::<Versioned>().await?.version),
            404 => Ok(0),
            status => bail!("GET {url}: {status}"),
        }
    }

    /// The order's status as order-service serves it.
    pub async fn order_state(
        &self,
        order: Uuid,
        min_version: Option<i64>,
    ) -> anyhow::Result<OrderState> {
        let mut url = self.order_url(order);
        if let Some(v) = min_version {
            url = format!("{url}?min_version={v}");
        }
        let response = self.http.get(&url).send().await?;
        match response.status().as_u16() {
            200 => {
                let order: Order = response.json().await?;
                Ok(match order.status.as_str() {
                    "pending" => OrderState::Pending,
                    "confirmed" => OrderState::Confirmed,
                    _ => OrderState::Other,
                })
            }
            404 => Ok(OrderState::Missing),
            status => bail!("GET {url}: {status}"),
        }
    }

    /// GETs `url`, expecting 200, and reads the whole body; its size in bytes.
    pub async fn get_bytes(&self, url: &str) -> anyhow::Result<usize> {
        let response = self.http.get(url).send().await?;
        let status = response.status().as_u16();
        if status != 200 {
            bail!("GET {url}: {status}");
        }
        Ok(response.bytes().await?.len())
    }

    /// GETs `url`'s body as text, expecting 200.
    pub async fn get_text(&self, url: &str) -> anyhow::Result<String> {
        let response = self.http.get(url).send().await?;
        let status = response.status().as_u16();
        if status != 200 {
            bail!("GET {url}: {status}");
        }
        Ok(response.text().await?)
    }
}
