//! The Postgres roles docker-compose.yml creates (docker/postgres-init.sh, run here against the
//! test server with names of this test's own): each service's role owns its database and
//! nothing else, is no superuser, cannot reach the other service's database, and each service
//! starts as that role (its start-up `ensure_database` finds the database and creates nothing;
//! its migrations run as the owner).

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Command;

use event_store::testing::{self, admin_database_url, unique, with_database};
use futures::FutureExt;
use sqlx::{Connection, PgConnection};
use tests::ServiceProcess;

struct Names {
    products_db: String,
    products_user: String,
    orders_db: String,
    orders_user: String,
}

const PASSWORD: &str = "test-role-password";

/// `url` (of the test server) logged in as `user` to `database`.
fn as_user(url: &str, user: &str, database: &str) -> String {
    let rest = url.strip_prefix("postgres://").unwrap_or(url);
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    with_database(&format!("postgres://{user}:{PASSWORD}@{host}"), database)
}

fn run_init_script(names: &Names) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docker/postgres-init.sh");
    let output = Command::new("bash")
        .arg(script)
        .env(
            "ADMIN_DATABASE_URL",
            with_database(&admin_database_url(), "postgres"),
        )
        .env("PRODUCTS_DB", &names.products_db)
        .env("PRODUCTS_DB_USER", &names.products_user)
        .env("PRODUCTS_DB_PASSWORD", PASSWORD)
        .env("ORDERS_DB", &names.orders_db)
        .env("ORDERS_DB_USER", &names.orders_user)
        .env("ORDERS_DB_PASSWORD", PASSWORD)
        .output()
        .expect("running docker/postgres-init.sh (needs bash and psql)");
    assert!(
        output.status.success(),
        "docker/postgres-init.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn sqlstate_of_connecting(url: &str) -> Option<String> {
    match PgConnection::connect(url).await {
        Ok(conn) => {
            let _ = conn.close().await;
            None
        }
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
        Err(e) => Some(format!("not a database error: {e}")),
    }
}

async fn check(names: &Names) {
    let admin = admin_database_url();
    run_init_script(names);

    let orders_url = as_user(&admin, &names.orders_user, &names.orders_db);
    let products_url = as_user(&admin, &names.products_user, &names.products_db);

    // Neither role reaches the other's database: 42501, insufficient privilege.
    for (url, what) in [
        (
            as_user(&admin, &names.orders_user, &names.products_db),
            "order role -> products",
        ),
        (
            as_user(&admin, &names.products_user, &names.orders_db),
            "product role -> orders",
        ),
    ] {
        assert_eq!(
            sqlstate_of_connecting(&url).await.as_deref(),
            Some("42501"),
            "{what} must be refused"
        );
    }

    // Each owns its own database, and is no superuser.
    let mut own = PgConnection::connect(&orders_url)
        .await
        .expect("order role -> orders");
    let (superuser, createdb, owner): (bool, bool, String) = sqlx::query_as(
        "SELECT r.rolsuper, r.rolcreatedb, pg_get_userbyid(d.datdba)::text \
         FROM pg_roles r, pg_database d WHERE r.rolname = current_user \
         AND d.datname = current_database()",
    )
    .fetch_one(&mut own)
    .await
    .expect("reading its role");
    assert!(
        !superuser && !createdb,
        "the order role has more than it needs"
    );
    assert_eq!(owner, names.orders_user);
    own.close().await.expect("closed");

    // Both services start as their roles: ensure_database (existence checked through the
    // `postgres` database) and the migrations work without a superuser.
    let nats_namespace = unique("roles");
    let env = |url: &str| {
        vec![
            ("DATABASE_URL".to_owned(), url.to_owned()),
            ("NATS_URL".to_owned(), testing::nats_url()),
            ("EVENTS_NAMESPACE".to_owned(), nats_namespace.clone()),
        ]
    };
    let products = ServiceProcess::start("product-service", env(&products_url));
    let orders = ServiceProcess::start("order-service", env(&orders_url));
    products.wait_ready().await;
    orders.wait_ready().await;
    drop((products, orders));

    // The migrations ran as the owner: every table of the database is the role's own.
    let mut own = PgConnection::connect(&orders_url)
        .await
        .expect("order role -> orders");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' \
         AND tableowner <> current_user",
    )
    .fetch_one(&mut own)
    .await
    .expect("listing tables");
    assert_eq!(tables, 0, "every table in orders belongs to the order role");
    own.close().await.expect("closed");
}

async fn clean_up(names: &Names) {
    let mut admin = PgConnection::connect(&admin_database_url())
        .await
        .expect("the test server");
    for db in [&names.products_db, &names.orders_db] {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
    for role in [&names.products_user, &names.orders_user] {
        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{role}\""))
            .execute(&mut admin)
            .await;
    }
}

#[tokio::test]
async fn each_service_role_owns_its_own_database_and_cannot_reach_the_others() {
    let id = unique("roles");
    let names = Names {
        products_db: format!("es_test_{id}_products"),
        products_user: format!("es_test_{id}_product_service"),
        orders_db: format!("es_test_{id}_orders"),
        orders_user: format!("es_test_{id}_order_service"),
    };
    let outcome = AssertUnwindSafe(check(&names)).catch_unwind().await;
    clean_up(&names).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
