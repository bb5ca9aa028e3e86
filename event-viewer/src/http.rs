//! The viewer's HTTP side: the page and its assets (embedded in the binary), a JSON API over
//! the window, the server-sent-events stream of changes, the forms' POSTs forwarded to the
//! services unchanged (same paths and bodies as the services' own API, so the page needs no
//! CORS), and the services' AsyncAPI and OpenAPI documents, which the page links to through
//! the viewer (`/services/<orders|products>/<asyncapi|openapi>.json`), since a browser may not
//! reach the addresses the viewer reaches them at (docker compose's).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::hub::Hub;
use crate::saga;
use crate::window::Filter;

pub struct State {
    pub hub: Arc<Hub>,
    pub http: reqwest::Client,
    pub orders_url: String,
    pub products_url: String,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(asset))
        .route("/app.js", web::get().to(asset))
        .route("/style.css", web::get().to(asset))
        .route("/health", web::get().to(health))
        .route("/api/status", web::get().to(status))
        .route("/api/cluster", web::get().to(cluster))
        .route("/api/events", web::get().to(events))
        .route("/api/saga/{key}", web::get().to(saga_of))
        .route("/api/stream", web::get().to(stream))
        .route("/services/{service}/{document}", web::get().to(document))
        .route("/products", web::post().to(forward))
        .route("/orders", web::post().to(forward))
        .route("/orders/{id}/cancel", web::post().to(forward));
}

async fn asset(req: HttpRequest) -> HttpResponse {
    let (body, content_type) = match req.path() {
        "/app.js" => (
            include_str!("../assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/style.css" => (
            include_str!("../assets/style.css"),
            "text/css; charset=utf-8",
        ),
        _ => (
            include_str!("../assets/index.html"),
            "text/html; charset=utf-8",
        ),
    };
    HttpResponse::Ok().content_type(content_type).body(body)
}

/// Liveness: the viewer serves whatever its dependencies do (it shows them as down).
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn status(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": state.hub.status(),
        "dead_letters": state.hub.dead_letters(),
    }))
}

/// The NATS nodes and the service streams' leaders and replicas (see [`crate::cluster`]).
async fn cluster(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(state.hub.cluster())
}

#[derive(Deserialize)]
struct EventsQuery {
    stream: Option<String>,
    correlation: Option<String>,
    limit: Option<usize>,
}

async fn events(state: web::Data<State>, query: web::Query<EventsQuery>) -> HttpResponse {
    let query = query.into_inner();
    let filter = Filter {
        stream: query.stream,
        correlation: query.correlation,
    };
    let limit = query.limit.unwrap_or(200).min(crate::window::CAPACITY);
    let body = state.hub.with_window(|w| {
        serde_json::to_string(&w.newest(&filter, limit)).unwrap_or_else(|_| "[]".to_owned())
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

async fn saga_of(state: web::Data<State>, key: web::Path<String>) -> HttpResponse {
    let key = key.into_inner();
    let saga = state.hub.with_window(|w| {
        saga::find_order(w.iter(), &key).map(|order| saga::assemble(w.iter(), &order))
    });
    match saga {
        Some(saga) => HttpResponse::Ok().json(saga),
        None => HttpResponse::NotFound().json(json!({
            "error": "not_found",
            "message": format!("no event in the window names order or correlation id {key}"),
        })),
    }
}

/// Server-sent events: `event`, `deadletter` and `status` as they happen; `resync` when this
/// page fell so far behind that it missed some (it then reloads the window).
async fn stream(state: web::Data<State>) -> HttpResponse {
    let first = format!(
        "event: status\ndata: {}\n\n",
        serde_json::to_string(&state.hub.status()).unwrap_or_default()
    );
    let updates = state.hub.subscribe();
    let rest = futures::stream::unfold(updates, |mut updates| async move {
        let frame = match updates.recv().await {
            Ok((name, json)) => format!("event: {name}\ndata: {json}\n\n"),
            Err(RecvError::Lagged(_)) => "event: resync\ndata: {}\n\n".to_owned(),
            Err(RecvError::Closed) => return None,
        };
        Some((frame, updates))
    });
    let frames = futures::stream::once(async move { first })
        .chain(rest)
        .map(|frame| Ok::<_, std::convert::Infallible>(web::Bytes::from(frame)));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(frames)
}

/// A service's contract: `GET /services/orders/asyncapi.json` answers order-service's
/// `GET /asyncapi.json`, and so on for `openapi.json` and `products`.
async fn document(path: web::Path<(String, String)>, state: web::Data<State>) -> HttpResponse {
    let (service, document) = path.into_inner();
    let base = match service.as_str() {
        "orders" => &state.orders_url,
        "products" => &state.products_url,
        _ => return not_found(format!("no service {service:?}: orders or products")),
    };
    if !matches!(document.as_str(), "asyncapi.json" | "openapi.json") {
        return not_found(format!(
            "no document {document:?}: asyncapi.json or openapi.json"
        ));
    }
    answer(state.http.get(format!("{base}/{document}")), base).await
}

fn not_found(message: String) -> HttpResponse {
    HttpResponse::NotFound().json(json!({ "error": "not_found", "message": message }))
}

/// Forwards a POST to the service that owns its path, with its body and the headers that
/// matter (content type, idempotency key, request id), and answers with the service's answer.
async fn forward(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let path = req.path();
    let base = if path.starts_with("/products") {
        &state.products_url
    } else {
        &state.orders_url
    };
    let mut outgoing = state.http.post(format!("{base}{path}")).body(body.to_vec());
    for name in ["content-type", "idempotency-key", "x-request-id"] {
        if let Some(value) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
            outgoing = outgoing.header(name, value);
        }
    }
    answer(outgoing, base).await
}

/// Sends `outgoing` to the service at `base` and answers with its status, body, content type
/// and request id; 502 when it does not answer.
async fn answer(outgoing: reqwest::RequestBuilder, base: &str) -> HttpResponse {
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => {
            return HttpResponse::BadGateway().json(json!({
                "error": "service_unavailable",
                "message": format!("{base} did not answer: {e}"),
            }))
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    for name in ["content-type", "x-request-id"] {
        if let Some(value) = answer.headers().get(name).and_then(|v| v.to_str().ok()) {
            response.insert_header((name, value.to_owned()));
        }
    }
    match answer.bytes().await {
        Ok(bytes) => response.body(bytes.to_vec()),
        Err(e) => HttpResponse::BadGateway().json(json!({
            "error": "service_unavailable",
            "message": format!("{base} broke off its answer: {e}"),
        })),
    }
}
