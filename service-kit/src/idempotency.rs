//! `Idempotency-Key` on state-changing requests, with the semantics of the IETF draft
//! (draft-ietf-httpapi-idempotency-key-header; docs/adr/0005-idempotency-keys.md):
//!
//! - [`middleware`]: a `POST` with a key claims it (`event_store::idempotency`) before any
//!   handler runs. The same request again replays the kept response with
//!   `Idempotent-Replayed: true`; the key on another request is 422, while the first is still
//!   running 409, a malformed key 400. A claimed request runs to its end even when the client
//!   goes away, then its key is kept (2xx) or released (anything else changed nothing).
//! - [`Key`]: the handler's side. The ids it derives from the key name the same order or
//!   product on every attempt, and [`Key::claimed`] hands the command executor what it needs to
//!   store the response in the append's transaction (`Commands::execute`).
//! - [`spawn_pruner`]: deletes expired keys in the background.

use std::future::{ready, Ready};
use std::time::Duration;

use actix_web::body::{self, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, LOCATION};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use event_store::aggregate::{Aggregate, Commands, Loaded, On};
use event_store::idempotency::{self, Claim, Claimed, Kept};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;
use crate::request::RequestContext;
use crate::tasks::Tasks;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// How long a claimed request may run before another attempt of it may take its key over
/// (only an attempt that crashed runs that long).
pub const LEASE: Duration = Duration::from_secs(30);
/// Largest body a keyed request may have (it is read whole to fingerprint it); the routes'
/// own limits are smaller.
const BODY_LIMIT: usize = 256 * 1024;

/// What the middleware needs: the database and how long keys are kept.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub pool: PgPool,
    pub retention: Duration,
}

/// 1 to 255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// What identifies a request beside its key: method, path with query, and body.
pub fn fingerprint(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(method.as_str().len() + path_and_query.len() + body.len());
    bytes.extend_from_slice(method.as_str().as_bytes());
    bytes.push(b' ');
    bytes.extend_from_slice(path_and_query.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(body);
    Uuid::new_v5(&Uuid::NAMESPACE_URL, &bytes)
        .simple()
        .to_string()
}

/// Marks a response the command executor kept for the request's key already (in its
/// append's transaction), so the middleware does not write it a second time.
#[derive(Debug, Clone, Copy)]
struct KeptForKey;

/// The response a kept one stands for; replayed ones say so. A `Kept` comes from
/// `Commands::execute`, which has stored it for the request's key when there is one.
pub fn respond(kept: Kept) -> HttpResponse {
    let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    response.extensions_mut().insert(KeptForKey);
    response.content_type("application/json");
    if let Some(location) = kept.location {
        response.insert_header((LOCATION, location));
    }
    if kept.replayed {
        response.insert_header((REPLAYED, HeaderValue::from_static("true")));
    }
    response.body(kept.body)
}

/// A command handler's one path, after it has built its command: `command` on `on` through
/// the executor, with the request's metadata and its key's claim, answered with what `answer`
/// renders from the state the command decided on (the answer kept with the key, or the kept
/// one again for a retried key).
pub async fn execute<A>(
    commands: &Commands<A>,
    context: &RequestContext,
    key: &Key,
    on: On,
    command: A::Command,
    answer: &dyn Fn(&Loaded<A::State>) -> Kept,
) -> Result<HttpResponse, ApiError>
where
    A: Aggregate,
    A::Error: Into<ApiError>,
{
    let metadata = context.metadata();
    let kept = commands
        .execute(on, command, &metadata, key.claimed(), answer)
        .await?;
    Ok(respond(kept))
}

/// Middleware: claims the key of a keyed `POST`, or answers for it (see the module).
pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<Idempotency>>().cloned();
    let (Some(state), Some(header), &Method::POST) = (
        state,
        req.headers().get(&IDEMPOTENCY_KEY).cloned(),
        req.method(),
    ) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let Some(key) = header.to_str().ok().filter(|k| valid_key(k)) else {
        return Ok(
            req.into_response(answer(ApiError::InvalidIdempotencyKey(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            )))),
        );
    };
    let key = key.to_owned();
    let body = match read_body(&mut req).await {
        Ok(body) => body,
        Err(response) => return Ok(req.into_response(response)),
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.path().to_owned(), |p| p.as_str().to_owned());
    let fingerprint = fingerprint(req.method(), &path, &body);
    req.set_payload(Payload::from(body));
    let claim = idempotency::claim(&state.pool, &key, &fingerprint, LEASE, state.retention).await;
    let claimed = match claim {
        Ok(Claim::Claimed(claimed)) => claimed,
        Ok(Claim::Replay(kept)) => return Ok(req.into_response(respond(kept))),
        Ok(Claim::InFlight) => {
            return Ok(req.into_response(answer(ApiError::Conflict {
                code: "idempotency_key_in_flight",
                message: format!(
                    "a request with Idempotency-Key {key:?} is still being processed; retry later"
                ),
            })))
        }
        Ok(Claim::Mismatch) => {
            return Ok(req.into_response(answer(ApiError::Unprocessable {
                code: "idempotency_key_reused",
                message: format!(
                    "Idempotency-Key {key:?} was used for another request (another route or body)"
                ),
            })))
        }
        Err(e) => return Ok(req.into_response(answer(e.into()))),
    };
    req.extensions_mut().insert(claimed.clone());
    // Runs to its end even when the client goes away (which drops this future), so the key
    // is kept or released rather than left in flight until its lease lapses.
    let pool = state.pool.clone();
    let run = actix_web::rt::spawn(async move {
        let response = next.call(req).await;
        settle(&pool, &claimed, response).await
    });
    run.await
        .map_err(|e| actix_web::error::ErrorInternalServerError(format!("request task: {e}")))?
}

async fn read_body(req: &mut ServiceRequest) -> Result<web::Bytes, HttpResponse> {
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    use futures::StreamExt as _;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            answer(ApiError::MalformedJson(format!(
                "cannot read the body: {e}"
            )))
        })?;
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(answer(ApiError::PayloadTooLarge { limit: BODY_LIMIT }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The middleware answers before any handler runs, so it builds the response itself.
fn answer(error: ApiError) -> HttpResponse {
    error.error_response()
}

/// Keeps a success's response for the key (unless the command executor kept it in its
/// append's transaction already: [`respond`] marks those) or releases the key after anything
/// else, which changed nothing.
async fn settle<B: MessageBody + 'static>(
    pool: &PgPool,
    claimed: &Claimed,
    response: Result<ServiceResponse<B>, actix_web::Error>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let response = match response {
        Ok(response) if response.status().is_success() => response,
        other => {
            if let Err(e) = idempotency::release(pool, claimed).await {
                tracing::warn!(error = %e, "cannot release an idempotency key; it lapses with its lease");
            }
            return other.map(ServiceResponse::map_into_boxed_body);
        }
    };
    if response.response().extensions().contains::<KeptForKey>() {
        return Ok(response.map_into_boxed_body());
    }
    let (req, res) = response.into_parts();
    let (res, body) = res.into_parts();
    let body = body::to_bytes(body)
        .await
        .map_err(|_| actix_web::error::ErrorInternalServerError("reading the response body"))?;
    let kept = Kept {
        status: res.status().as_u16(),
        location: res
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.to_vec(),
        replayed: false,
    };
    let stored = async {
        let mut conn = pool.acquire().await?;
        idempotency::keep(&mut conn, claimed, &kept).await
    };
    if let Err(e) = stored.await {
        tracing::warn!(error = %e, "cannot keep the response for an idempotency key");
    }
    Ok(ServiceResponse::new(req, res.set_body(BoxBody::new(body))))
}

/// The key a handler's request claimed: none without an `Idempotency-Key` header.
#[derive(Debug, Clone, Default)]
pub struct Key(pub Option<Claimed>);

impl Key {
    /// The id of a new aggregate: derived from the key (the same on every attempt), or a
    /// fresh time-ordered one without a key.
    pub fn new_id(&self, name: &str) -> Uuid {
        self.0
            .as_ref()
            .map_or_else(Uuid::now_v7, |c| c.derive(name))
    }

    /// The request's claim on its key, when it has one: what `Commands::execute` takes.
    pub fn claimed(&self) -> Option<&Claimed> {
        self.0.as_ref()
    }
}

impl FromRequest for Key {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(Ok(Key(req.extensions().get::<Claimed>().cloned())))
    }
}

/// Deletes expired keys every `min(retention, 1 min)` until shutdown.
pub fn spawn_pruner(tasks: &Tasks, pool: PgPool, retention: Duration) {
    let shutdown = tasks.shutdown().clone();
    let every = retention.clamp(Duration::from_secs(1), Duration::from_secs(60));
    tasks.spawn("idempotency-pruner", async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match idempotency::prune(&pool).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(pruned = n, "expired idempotency keys deleted"),
                Err(e) => tracing::warn!(error = %e, "cannot prune idempotency keys"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_1_to_255_visible_ascii_characters() {
        assert!(valid_key("a"));
        assert!(valid_key(&"k".repeat(MAX_KEY_LEN)));
        assert!(valid_key("8e03978e-40d5-43e8-bc93-6894a57f9324"));
        for bad in [
            "",
            " ",
            "has space",
            "tab\t",
            "é",
            &"k".repeat(MAX_KEY_LEN + 1),
        ] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_fingerprint_changes_with_method_path_and_body() {
        let base = fingerprint(&Method::POST, "/orders", b"{}");
        assert_eq!(base, fingerprint(&Method::POST, "/orders", b"{}"));
        assert_ne!(base, fingerprint(&Method::PUT, "/orders", b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/orders/1/cancel", b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/orders", b"{ }"));
    }
}

/// The `Idempotency-Key` header as the OpenAPI documents describe it (`params(KeyHeader)`).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct KeyHeader {
    /// Makes the request safe to retry: the same key with the same request replays the first
    /// response (`Idempotent-Replayed: true`) and changes nothing; with another request it is
    /// 422 `idempotency_key_reused`; while the first is still running 409
    /// `idempotency_key_in_flight`; malformed 400 `invalid_idempotency_key`. Kept for
    /// IDEMPOTENCY_RETENTION (24 h by default).
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = r"^[!-~]{1,255}$"
    )]
    pub idempotency_key: Option<String>,
}
