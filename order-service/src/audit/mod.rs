//! The consistency audit: every product of the catalogue (this service's projection of
//! product-service's events) against product-service's own record, read from its HTTP API.
//! C is the share of products on which both agree; each other product is named with why:
//!
//! - `missing`: product-service has it, the catalogue does not;
//! - `behind`: the catalogue reflects an older version of the product's stream;
//! - `ahead`: the catalogue reflects a newer version than product-service reports (the
//!   catalogue is read first, so this never happens by lag alone);
//! - `diverged`: the same version, different name, price, currency or stock;
//! - `unexpected`: in the catalogue, unknown to product-service.
//!
//! [`compare`] is pure; [`run`] reads both sides ([`source`] is product-service's side) and
//! sets the `audit_consistency` gauge; [`command`] is `order-service audit`.

pub mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::Config;
use crate::projections::catalog::{self, CatalogRow};

pub use self::source::{ProductService, SourceProduct};

/// Why a product's copy does not agree with its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Missing,
    Behind,
    Ahead,
    Diverged,
    Unexpected,
}

/// One product on which the catalogue and product-service disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Disagreement {
    pub product_id: Uuid,
    pub reason: Reason,
    /// The stream version the catalogue reflects (none when `missing`).
    pub catalogue_version: Option<i64>,
    /// The stream version product-service reports (none when `unexpected`).
    pub source_version: Option<i64>,
    /// In words: `behind by 2 versions (catalogue v3, product-service v5)`.
    #[schema(example = "diverged at v4: price_cents 1000 != 1200")]
    pub detail: String,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.product_id, self.detail)
    }
}

/// The audit's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Audit {
    /// Products known to either side.
    pub products: usize,
    /// Products on which both agree.
    pub agree: usize,
    /// C = agree / products (1 when there are none).
    #[schema(example = 1.0)]
    pub consistency: f64,
    /// By product id.
    pub disagreements: Vec<Disagreement>,
}

impl Audit {
    /// `AUDIT products=N agree=N C=1.000`. C is rounded down, so it reads 1.000 only when all
    /// agree.
    pub fn headline(&self) -> String {
        let c = (self.consistency * 1000.0).floor() / 1000.0;
        format!(
            "AUDIT products={} agree={} C={c:.3}",
            self.products, self.agree
        )
    }

    pub fn is_consistent(&self) -> bool {
        self.agree == self.products
    }
}

/// Compares the catalogue's rows with product-service's products.
pub fn compare(catalogue: &[CatalogRow], source: &[SourceProduct]) -> Audit {
    let ours: BTreeMap<Uuid, &CatalogRow> = catalogue.iter().map(|r| (r.product_id, r)).collect();
    let theirs: BTreeMap<Uuid, &SourceProduct> = source.iter().map(|p| (p.id, p)).collect();
    let ids: BTreeSet<Uuid> = ours.keys().chain(theirs.keys()).copied().collect();
    let disagreements: Vec<Disagreement> = ids
        .iter()
        .filter_map(|id| disagreement(*id, ours.get(id).copied(), theirs.get(id).copied()))
        .collect();
    let products = ids.len();
    let agree = products - disagreements.len();
    Audit {
        products,
        agree,
        consistency: if products == 0 {
            1.0
        } else {
            agree as f64 / products as f64
        },
        disagreements,
    }
}

fn disagreement(
    product_id: Uuid,
    ours: Option<&CatalogRow>,
    theirs: Option<&SourceProduct>,
) -> Option<Disagreement> {
    let at = |reason, detail: String| {
        Some(Disagreement {
            product_id,
            reason,
            catalogue_version: ours.map(|r| r.version),
            source_version: theirs.map(|p| p.version),
            detail,
        })
    };
    let (row, product) = match (ours, theirs) {
        (None, None) => return None,
        (None, Some(p)) => {
            return at(
                Reason::Missing,
                format!("missing (product-service v{})", p.version),
            )
        }
        (Some(r), None) => {
            return at(
                Reason::Unexpected,
                format!(
                    "unexpected (catalogue v{}, unknown to product-service)",
                    r.version
                ),
            )
        }
        (Some(r), Some(p)) => (r, p),
    };
    let versions = |n: i64| if n == 1 { "version" } else { "versions" };
    if row.version < product.version {
        let n = product.version - row.version;
        return at(
            Reason::Behind,
            format!(
                "behind by {n} {} (catalogue v{}, product-service v{})",
                versions(n),
                row.version,
                product.version
            ),
        );
    }
    if row.version > product.version {
        let n = row.version - product.version;
        return at(
            Reason::Ahead,
            format!(
                "ahead by {n} {} (catalogue v{}, product-service v{})",
                versions(n),
                row.version,
                product.version
            ),
        );
    }
    let mut differences = Vec::new();
    let mut differ = |field: &str, ours: String, theirs: String| {
        if ours != theirs {
            differences.push(format!("{field} {ours} != {theirs}"));
        }
    };
    differ(
        "name",
        format!("{:?}", row.name),
        format!("{:?}", product.name),
    );
    differ(
        "price_cents",
        row.price_cents.to_string(),
        product.price_cents.to_string(),
    );
    differ("currency", row.currency.clone(), product.currency.clone());
    differ(
        "stock_available",
        row.stock_available.to_string(),
        product.stock_available.to_string(),
    );
    if differences.is_empty() {
        return None;
    }
    at(
        Reason::Diverged,
        format!(
            "diverged at v{}: {} (catalogue != product-service)",
            row.version,
            differences.join(", ")
        ),
    )
}

/// Why an audit could not run: one side could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading the catalogue: {0}")]
    Catalogue(#[from] sqlx::Error),
    #[error("{0:#}")]
    ProductService(anyhow::Error),
}

/// Reads the catalogue, then product-service's products (so lag can only make the catalogue
/// look behind, never ahead), compares them and sets the `audit_consistency` gauge.
pub async fn run(pool: &PgPool, products: &ProductService) -> Result<Audit, AuditError> {
    let catalogue = catalog::all(pool).await?;
    let source = products.all().await.map_err(AuditError::ProductService)?;
    let audit = compare(&catalogue, &source);
    metrics::gauge!("audit_consistency").set(audit.consistency);
    metrics::gauge!("audit_products").set(audit.products as f64);
    Ok(audit)
}

/// `order-service audit`: prints the headline and one line per disagreement; exits 0 when
/// C = 1, 1 when they disagree, 2 when the audit could not run.
pub async fn command(config: &Config) -> ExitCode {
    let audited = async {
        let pool = service_kit::database::connect(&config.database_url, 2).await?;
        let products = ProductService::new(&config.settings.product_service_url)?;
        let audit = run(&pool, &products).await;
        pool.close().await;
        anyhow::Ok(audit?)
    };
    match audited.await {
        Ok(audit) => {
            println!("{}", audit.headline());
            for disagreement in &audit.disagreements {
                println!("{disagreement}");
            }
            if audit.is_consistent() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("audit failed: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u128, version: i64) -> CatalogRow {
        CatalogRow {
            product_id: Uuid::from_u128(id),
            name: "Cup".to_owned(),
            price_cents: 1250,
            currency: "USD".to_owned(),
            stock_available: 10,
            available: true,
            version,
        }
    }

    fn product(id: u128, version: i64) -> SourceProduct {
        SourceProduct {
            id: Uuid::from_u128(id),
            name: "Cup".to_owned(),
            price_cents: 1250,
            currency: "USD".to_owned(),
            stock_available: 10,
            version,
        }
    }

    #[test]
    fn copies_that_agree_give_c_1_and_nothing_else() {
        let audit = compare(&[row(1, 3), row(2, 1)], &[product(2, 1), product(1, 3)]);
        assert_eq!((audit.products, audit.agree), (2, 2));
        assert!(audit.is_consistent());
        assert_eq!(audit.headline(), "AUDIT products=2 agree=2 C=1.000");
        assert!(audit.disagreements.is_empty());
    }

    #[test]
    fn nothing_on_either_side_is_consistent() {
        assert_eq!(
            compare(&[], &[]).headline(),
            "AUDIT products=0 agree=0 C=1.000"
        );
    }

    #[test]
    fn each_kind_of_disagreement_is_named_with_its_reason() {
        let mut diverged = row(4, 2);
        diverged.price_cents = 999;
        diverged.currency = "EUR".to_owned();
        let catalogue = [row(2, 3), row(3, 5), diverged, row(5, 1), row(6, 1)];
        let source = [
            product(1, 2),
            product(2, 5),
            product(3, 4),
            product(4, 2),
            product(6, 1),
        ];
        let audit = compare(&catalogue, &source);
        assert_eq!((audit.products, audit.agree), (6, 1));
        let reasons: Vec<(u128, Reason, &str)> = audit
            .disagreements
            .iter()
            .map(|d| (d.product_id.as_u128(), d.reason, d.detail.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, Reason::Missing, "missing (product-service v2)"),
                (
                    2,
                    Reason::Behind,
                    "behind by 2 versions (catalogue v3, product-service v5)"
                ),
                (
                    3,
                    Reason::Ahead,
                    "ahead by 1 version (catalogue v5, product-service v4)"
                ),
                (
                    4,
                    Reason::Diverged,
                    "diverged at v2: price_cents 999 != 1250, currency EUR != USD \
                     (catalogue != product-service)"
                ),
                (
                    5,
                    Reason::Unexpected,
                    "unexpected (catalogue v1, unknown to product-service)"
                ),
            ]
        );
        assert_eq!(audit.headline(), "AUDIT products=6 agree=1 C=0.166");
    }

    #[test]
    fn c_reads_1_only_when_every_product_agrees() {
        let catalogue: Vec<CatalogRow> = (0..1000).map(|i| row(i, 1)).collect();
        let source: Vec<SourceProduct> = (0..1001).map(|i| product(i, 1)).collect();
        let audit = compare(&catalogue, &source);
        assert_eq!(audit.headline(), "AUDIT products=1001 agree=1000 C=0.999");
    }
}
