//! NATS permissions, with the file docker-compose.yml runs its server with (docker/nats.conf),
//! on a private nats-server: both services logged in as their own users still run the whole
//! flow, while a forged event on product-service's subjects, claiming the next version of a
//! real product, is refused by the server (sent with order-service's login, or with none) and
//! never reaches order-service's catalogue. The viewer reads both streams and publishes nothing.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{jetstream, ConnectOptions, Event, HeaderMap};
use event_store::envelope::headers;
use event_store::testing::NatsServer;
use futures::StreamExt;
use serde_json::json;
use tests::TestSystem;
use uuid::Uuid;

/// The subjects in docker/nats.conf are written for this namespace.
const NAMESPACE: &str = "shop";

struct User {
    name: &'static str,
    password: &'static str,
    /// The variable docker/nats.conf reads this user's password from.
    variable: &'static str,
}

const ORDERS: User = User {
    name: "order-service",
    password: "test-orders",
    variable: "ORDER_SERVICE_NATS_PASSWORD",
};
const PRODUCTS: User = User {
    name: "product-service",
    password: "test-products",
    variable: "PRODUCT_SERVICE_NATS_PASSWORD",
};
const VIEWER: User = User {
    name: "viewer",
    password: "test-viewer",
    variable: "VIEWER_NATS_PASSWORD",
};

fn compose_permissions() -> NatsServer {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docker/nats.conf");
    let env = [&ORDERS, &PRODUCTS, &VIEWER]
        .iter()
        .map(|u| (u.variable.to_owned(), u.password.to_owned()))
        .collect();
    NatsServer::start_with(vec!["-c".into(), file.display().to_string()], env)
}

fn service_env(user: &User) -> Vec<(String, String)> {
    vec![
        ("EVENTS_NAMESPACE".into(), NAMESPACE.into()),
        ("NATS_USER".into(), user.name.into()),
        ("NATS_PASSWORD".into(), user.password.into()),
    ]
}

/// A client logged in as `user`, and the errors the server sent it (permission violations
/// arrive asynchronously, as `-ERR`).
async fn client_as(url: &str, user: &User) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let client = ConnectOptions::with_user_and_password(user.name.into(), user.password.into())
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let Event::ServerError(e) = event {
                    seen.lock().expect("not poisoned").push(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{} cannot log in: {e}", user.name));
    (client, errors)
}

/// Publishes `PriceChanged` at `version` of `product`'s stream, as product-service's relay
/// would, through JetStream; Ok when the stream stored it.
async fn forge_price_change(
    client: &async_nats::Client,
    product: &str,
    version: i64,
    price_cents: i64,
) -> Result<(), String> {
    let stream_id = format!("product-{product}");
    let mut h = HeaderMap::new();
    let event_id = Uuid::new_v4().to_string();
    h.insert("Nats-Msg-Id", event_id.as_str());
    h.insert(headers::EVENT_TYPE, "PriceChanged");
    h.insert(headers::STREAM_ID, stream_id.as_str());
    h.insert(headers::STREAM_VERSION, version.to_string().as_str());
    h.insert(headers::POSITION, "1000000");
    let payload =
        json!({"product_id": product, "old_price_cents": 2500, "price_cents": price_cents});
    let mut js = jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(2));
    let subject = format!("{NAMESPACE}.product.events.{stream_id}.PriceChanged");
    let ack = js
        .publish_with_headers(subject, h, payload.to_string().into())
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|_| ()).map_err(|e| e.to_string())
}

async fn permission_violation(errors: &Arc<Mutex<Vec<String>>>, subject_part: &str) -> bool {
    for _ in 0..50 {
        if errors
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|e| e.to_lowercase().contains("permissions violation") && e.contains(subject_part))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_forged_price_change_is_refused_by_the_server_while_the_authenticated_services_work() {
    let nats = compose_permissions();
    let system = TestSystem::start_each_with_env(
        &event_store::testing::admin_database_url(),
        nats.url(),
        service_env(&PRODUCTS),
        service_env(&ORDERS),
    )
    .await;

    // The real flow, both services logged in as themselves.
    let product = system.create_product("Teapot", 2500, 10).await;
    system.catalogue_has(&product, 1).await;
    let (status, order) = system
        .post(
            format!("{}/orders", system.orders.base_url),
            json!({"customer_id": "alice", "lines": [{"product_id": product, "quantity": 3}]}),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    let settled = system
        .settled_order(order["id"].as_str().expect("an order id"))
        .await;
    assert_eq!(settled["status"], "confirmed", "{settled}");
    let reserved = system
        .eventually(
            format!("{}/catalog/products/{product}", system.orders.base_url),
            |p| p["stock_available"] == 7,
        )
        .await;
    let version = reserved["version"].as_i64().expect("a version");

    // No login: the server does not let the client in at all.
    let anonymous = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(nats.url()))
        .await
        .expect("the server answers");
    assert!(
        anonymous.is_err(),
        "a client without a login was let in: the server has no authorization"
    );

    // order-service's login, on product-service's subjects: refused.
    let (orders, errors) = client_as(&nats.url(), &ORDERS).await;
    let forged = forge_price_change(&orders, &product, version + 1, 1).await;
    assert!(forged.is_err(), "the stream stored a forged event");
    assert!(
        permission_violation(&errors, "shop.product.events").await,
        "the server did not report a permission violation: {:?}",
        errors.lock().expect("not poisoned")
    );

    // The viewer reads the product stream but cannot publish on it.
    let (viewer, viewer_errors) = client_as(&nats.url(), &VIEWER).await;
    let forged = forge_price_change(&viewer, &product, version + 1, 2).await;
    assert!(forged.is_err(), "the viewer published an event");
    assert!(permission_violation(&viewer_errors, "shop.product.events").await);
    let stream = jetstream::new(viewer)
        .get_stream(format!("{NAMESPACE}_product_events"))
        .await
        .expect("the viewer may look at the product stream");
    let mut messages = stream
        .create_consumer(jetstream::consumer::push::OrderedConfig {
            deliver_subject: format!("_INBOX.viewer.{}", Uuid::new_v4()),
            filter_subject: format!("{NAMESPACE}.product.events.product-{product}.>"),
            ..Default::default()
        })
        .await
        .expect("the viewer may create an ordered consumer")
        .messages()
        .await
        .expect("and read it");
    let first = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("the viewer receives the product's events")
        .expect("a message")
        .expect("not an error");
    assert!(
        first.subject.ends_with(".ProductCreated"),
        "{}",
        first.subject
    );

    // product-service's login cannot publish order-service's events either.
    let (products, product_errors) = client_as(&nats.url(), &PRODUCTS).await;
    products
        .publish(
            format!(
                "{NAMESPACE}.order.events.order-{}.OrderCancelled",
                Uuid::new_v4()
            ),
            "{}".into(),
        )
        .await
        .expect("queued");
    products.flush().await.expect("flushed");
    assert!(permission_violation(&product_errors, "shop.order.events").await);

    // Nothing forged reached the catalogue: the next real price change takes the version the
    // forgeries claimed, and order-service applies it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = system
        .get(format!(
            "{}/catalog/products/{product}",
            system.orders.base_url
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["price_cents"], 2500, "{body}");
    assert_eq!(body["version"], version, "{body}");
    let (status, body) = system
        .post(
            format!("{}/products/{product}/price", system.products.base_url),
            json!({"price_cents": 2700}),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let repriced = system
        .eventually(
            format!("{}/catalog/products/{product}", system.orders.base_url),
            |p| p["price_cents"] == 2700,
        )
        .await;
    assert_eq!(repriced["version"], version + 1, "{repriced}");
    let (_, ready) = system
        .get(format!("{}/health/ready", system.orders.base_url))
        .await;
    assert!(
        ready["version_conflicts"].is_null() || ready["version_conflicts"]["count"] == 0,
        "{ready}"
    );
}
