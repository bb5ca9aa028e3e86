//! The consistency audit end to end: order-service's catalogue against product-service's own
//! records, through `order-service audit` (its output and exit code) and `GET /admin/audit`.
//! A catalogue that agrees audits at C = 1; one broken on purpose, by writing to its table
//! directly, names each product with the reason; a rebuild from the inbox repairs it.

use event_store::testing::{self, free_port};
use serde_json::{json, Value};
use tests::{service_binary, TestSystem};

const TOKEN: &str = "audit-token";

async fn system() -> TestSystem {
    TestSystem::start_each_with_env(
        &testing::admin_database_url(),
        testing::nats_url(),
        Vec::new(),
        vec![("ADMIN_TOKEN".to_owned(), TOKEN.to_owned())],
    )
    .await
}

/// `GET /admin/audit` with the token.
async fn admin_audit(system: &TestSystem) -> (u16, Value) {
    let response = system
        .http
        .get(format!("{}/admin/audit", system.orders.base_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /admin/audit");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The `audit_consistency` gauge at order-service's `/metrics`.
async fn consistency_gauge(system: &TestSystem) -> Option<f64> {
    let text = system
        .http
        .get(format!("{}/metrics", system.orders.base_url))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with("audit_consistency"))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

async fn sql(system: &TestSystem, statement: &str, product: &str) {
    sqlx::query(statement)
        .bind(uuid::Uuid::parse_str(product).expect("a product id"))
        .execute(&system.orders_db.pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

#[tokio::test]
async fn the_audit_finds_an_agreeing_catalogue_at_c_1_and_names_each_product_broken_on_purpose() {
    // Arrange: four products, one of them at version 2, all in the catalogue.
    let system = system().await;
    let mut products = Vec::new();
    for i in 0..4 {
        products.push(
            system
                .create_product(&format!("Audit {i}"), 1_000 + i, 10)
                .await,
        );
    }
    let (status, body) = system
        .post(
            format!(
                "{}/products/{}/price",
                system.products.base_url, products[1]
            ),
            json!({ "price_cents": 1_500 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    system.catalogue_has(&products[1], 2).await;

    // Agreeing: C = 1 from the command (exit 0), the admin route and the gauge.
    assert_eq!(system.audit().await, 1.0);
    let (code, printed) = system.run_audit().await;
    assert_eq!(code, Some(0), "{printed}");
    assert_eq!(printed.trim(), "AUDIT products=4 agree=4 C=1.000");
    let (status, audit) = admin_audit(&system).await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(audit["products"], 4);
    assert_eq!(audit["consistency"], 1.0);
    assert_eq!(audit["disagreements"], json!([]));
    assert_eq!(consistency_gauge(&system).await, Some(1.0));

    // Act: break the catalogue, one product per reason, and add one product-service lacks.
    sql(
        &system,
        "DELETE FROM catalog_products WHERE product_id = $1",
        &products[0],
    )
    .await;
    sql(
        &system,
        "UPDATE catalog_products SET version = 1 WHERE product_id = $1",
        &products[1],
    )
    .await;
    sql(
        &system,
        "UPDATE catalog_products SET price_cents = 1 WHERE product_id = $1",
        &products[2],
    )
    .await;
    let stranger = uuid::Uuid::new_v4().to_string();
    sql(
        &system,
        "INSERT INTO catalog_products (product_id, name, price_cents, stock_available, \
                                       available, version) \
         VALUES ($1, 'Stranger', 100, 1, true, 1)",
        &stranger,
    )
    .await;

    // Assert: C = 1/5, exit 1, one line per disagreement with its reason.
    let (code, printed) = system.run_audit().await;
    assert_eq!(code, Some(1), "{printed}");
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines[0], "AUDIT products=5 agree=1 C=0.200", "{printed}");
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no line for {id}: {printed}"))
            .to_string()
    };
    assert_eq!(
        line(&products[0]),
        format!("{} missing (product-service v1)", products[0])
    );
    assert_eq!(
        line(&products[1]),
        format!(
            "{} behind by 1 version (catalogue v1, product-service v2)",
            products[1]
        )
    );
    assert_eq!(
        line(&products[2]),
        format!(
            "{} diverged at v1: price_cents 1 != 1002 (catalogue != product-service)",
            products[2]
        )
    );
    assert_eq!(
        line(&stranger),
        format!("{stranger} unexpected (catalogue v1, unknown to product-service)")
    );
    assert_eq!(lines.len(), 5, "{printed}");

    let (status, audit) = admin_audit(&system).await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(
        (audit["products"].as_u64(), audit["agree"].as_u64()),
        (Some(5), Some(1))
    );
    assert_eq!(audit["consistency"], 0.2);
    let reason = |id: &str| {
        audit["disagreements"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["product_id"] == id)
            .map(|d| d["reason"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(reason(&products[0]).as_deref(), Some("missing"));
    assert_eq!(reason(&products[1]).as_deref(), Some("behind"));
    assert_eq!(reason(&products[2]).as_deref(), Some("diverged"));
    assert_eq!(reason(&stranger).as_deref(), Some("unexpected"));
    assert_eq!(reason(&products[3]), None);
    assert_eq!(consistency_gauge(&system).await, Some(0.2));

    // The catalogue rebuilt from the inbox agrees again.
    let rebuild = system
        .http
        .post(format!(
            "{}/admin/projections/catalog/rebuild",
            system.orders.base_url
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("starting the rebuild");
    assert_eq!(rebuild.status().as_u16(), 202);
    assert_eq!(system.audit().await, 1.0);
}

#[tokio::test]
async fn the_admin_audit_needs_the_token() {
    let system = system().await;
    let (status, _) = system
        .get(format!("{}/admin/audit", system.orders.base_url))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_audit_that_cannot_reach_product_service_exits_2_naming_it() {
    let system = system().await;
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let output = tokio::process::Command::new(service_binary("order-service"))
        .args(["audit", "--product-service-url", &unreachable])
        .env("DATABASE_URL", &system.orders_db.url)
        .output()
        .await
        .expect("running order-service audit");
    let printed = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{printed}");
    assert!(
        printed.contains("audit failed") && printed.contains(&unreachable),
        "{printed}"
    );
}
