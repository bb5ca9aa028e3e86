//! Request ids and trace context: taken from `X-Request-Id` (or made up) and `traceparent`,
//! stored in the metadata of every event the request writes, echoed in the response, carried
//! by the request's log span; and each request timed by its route pattern.

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

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");
/// Seconds each request took, by method, route pattern (`/orders/{id}`; `unmatched` for paths
/// no route matches, so clients cannot grow the label set) and status class (`2xx`).
pub const HTTP_DURATION: &str = "http_request_duration_seconds";

/// Longest request id taken from a client; longer ones are replaced.
const MAX_ID_LEN: usize = 128;

/// Where a write came from, as recorded in its events' metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub request_id: String,
    /// The caller's W3C trace context, when it sent a well-formed one (with the `otel`
    /// feature exporting, the request's own span context instead).
    pub traceparent: Option<String>,
    /// The request's `Idempotency-Key`, when it sent a well-formed one.
    pub idempotency_key: Option<String>,
}

impl RequestContext {
    /// Metadata for the events this request writes.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            correlation_id: Some(self.request_id.clone()),
            causation_id: None,
            traceparent: self.traceparent.clone(),
            idempotency_key: self.idempotency_key.clone(),
        }
    }

    fn from_headers(req: &HttpRequest) -> Self {
        let header = |name: &HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
        RequestContext {
            request_id: header(&REQUEST_ID_HEADER)
                .map(str::trim)
                .filter(|id| usable_id(id))
                .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned),
            traceparent: header(&TRACEPARENT_HEADER)
                .map(str::trim)
                .filter(|tp| valid_traceparent(tp))
                .map(str::to_owned),
            idempotency_key: header(&crate::idempotency::IDEMPOTENCY_KEY)
                .filter(|key| crate::idempotency::valid_key(key))
                .map(str::to_owned),
        }
    }
}

impl FromRequest for RequestContext {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let context = req.extensions().get::<RequestContext>().cloned();
        ready(Ok(
            context.unwrap_or_else(|| RequestContext::from_headers(req))
        ))
    }
}

/// A client's id is kept when it is short printable ASCII, so it is safe to log and echo.
fn usable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// `version-traceid-parentid-flags` in lowercase hex, as W3C Trace Context defines it
/// (version `ff` and all-zero ids are invalid).
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    match parts[..] {
        [version, trace, parent, flags, ..] => {
            hex(version, 2)
                && version != "ff"
                && (parts.len() == 4 || version != "00")
                && hex(trace, 32)
                && nonzero(trace)
                && hex(parent, 16)
                && nonzero(parent)
                && hex(flags, 2)
        }
        _ => false,
    }
}

/// Middleware: decides the request context, runs the request in a span carrying it, logs and
/// times the outcome, and echoes the request id.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut context = RequestContext::from_headers(req.request());
    let span = tracing::info_span!(
        "http",
        request_id = %context.request_id,
        traceparent = context.traceparent.as_deref(),
        method = %req.method(),
        path = %req.path(),
    );
    crate::logging::join_trace(&span, &mut context.traceparent);
    let request_id = context.request_id.clone();
    let method = req.method().to_string();
    req.extensions_mut().insert(context);
    let started = Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let elapsed = started.elapsed();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = res.status();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    metrics::histogram!(
        HTTP_DURATION,
        "method" => method,
        "route" => route,
        "status" => format!("{}xx", status.as_u16() / 100),
    )
    .record(elapsed.as_secs_f64());
    // At debug: at the default level a line per request would cost more than many a request
    // (the histogram above counts and times every one).
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "request served"
        )
    });
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_trace_contexts_are_kept_and_others_dropped() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(good));
        assert!(valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
        ));
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(!valid_traceparent(bad), "{bad:?}");
        }
    }

    #[test]
    fn client_request_ids_are_kept_only_when_safe_to_echo() {
        assert!(usable_id("req-42"));
        assert!(!usable_id(""));
        assert!(!usable_id("has space"));
        assert!(!usable_id(&"x".repeat(MAX_ID_LEN + 1)));
    }
}
