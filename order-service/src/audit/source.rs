//! product-service's side of the audit: every product with its stream version, from its
//! `GET /products`, a page at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use uuid::Uuid;

/// Products asked for per page (product-service's largest page).
const PAGE: usize = 1000;
/// How long one page may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A product as product-service reports it (the fields the catalogue copies).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SourceProduct {
    pub id: Uuid,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock_available: i64,
    /// The product stream's version this state includes.
    pub version: i64,
}

/// product-service's HTTP API at a base URL.
#[derive(Debug, Clone)]
pub struct ProductService {
    base_url: String,
    http: reqwest::Client,
}

impl ProductService {
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(ProductService {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// Every product, by id. Pages are offsets into a list by name: a product created while
    /// the pages are read may be missed (and then counts as not yet known), one seen twice
    /// counts once.
    pub async fn all(&self) -> anyhow::Result<Vec<SourceProduct>> {
        let mut products = BTreeMap::new();
        for page in 0.. {
            let url = format!(
                "{}/products?limit={PAGE}&offset={}",
                self.base_url,
                page * PAGE
            );
            let response = self
                .http
                .get(&url)
                .send()
                .await
                .with_context(|| format!("asking product-service: GET {url}"))?;
            let status = response.status();
            anyhow::ensure!(
                status.is_success(),
                "product-service answered GET {url} with {status}"
            );
            let batch: Vec<SourceProduct> = response
                .json()
                .await
                .with_context(|| format!("reading product-service's answer to GET {url}"))?;
            let last = batch.len() < PAGE;
            products.extend(batch.into_iter().map(|p| (p.id, p)));
            if last {
                break;
            }
        }
        Ok(products.into_values().collect())
    }
}
