//! Request ids: taken from `X-Request-Id` or generated, echoed in the response, logged with
//! every line of the request, and stored as the `correlation_id` of the events it writes.

use std::future::{ready, Ready};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use event_store::Metadata;
use tracing::Instrument;
use uuid::Uuid;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
const TRACEPARENT_HEADER: &str = "traceparent";

/// Where a write came from, as recorded in its events' metadata.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub traceparent: Option<String>,
}

impl RequestContext {
    pub fn metadata(&self) -> Metadata {
        Metadata {
            correlation_id: Some(self.request_id.clone()),
            causation_id: None,
            traceparent: self.traceparent.clone(),
        }
    }
}

/// Middleware: decides the request id, logs the request in a span carrying it, echoes it.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let context = RequestContext {
        request_id: header(req.request(), REQUEST_ID_HEADER)
            .unwrap_or_else(|| Uuid::now_v7().to_string()),
        traceparent: header(req.request(), TRACEPARENT_HEADER),
    };
    let request_id = context.request_id.clone();
    let span = tracing::info_span!(
        "http",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
    );
    req.extensions_mut().insert(context);
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    span.in_scope(|| {
        tracing::info!(
            status = res.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request served"
        );
    });
    Ok(res)
}

/// A client-supplied id is kept when it is short printable ASCII, so it is safe to log and
/// to echo; anything else is replaced.
fn header(req: &HttpRequest, name: &str) -> Option<String> {
    let value = req.headers().get(name)?.to_str().ok()?.trim();
    let ok = !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| value.to_owned())
}

impl FromRequest for RequestContext {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let context = req
            .extensions()
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_else(|| RequestContext {
                request_id: Uuid::now_v7().to_string(),
                traceparent: None,
            });
        ready(Ok(context))
    }
}
