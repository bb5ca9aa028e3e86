//! The JSON error contract both services answer in, `{ "error": code, "message": text }`, and
//! the part of it the shared routes need: [`EdgeError`], and [`resource`], whose other methods
//! answer 405 in that format. Each service keeps its own error type for its own routes and
//! reuses [`ErrorBody`], so the two agree on the body.

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code: `malformed_json`, `validation_failed`, `not_found`,
    /// `method_not_allowed`, `version_conflict`, `payload_too_large`, `unauthorized`,
    /// `rebuild_in_progress`, `unavailable`, `internal`; with an `Idempotency-Key`,
    /// `invalid_idempotency_key`, `idempotency_key_in_flight` and `idempotency_key_reused`;
    /// order-service also answers `unknown_product` and `invalid_transition`. Each route's
    /// responses name its codes.
    #[schema(example = "validation_failed")]
    pub error: String,
    /// What went wrong, for people.
    #[schema(example = "price must be positive, got 0 cents")]
    pub message: String,
}

/// Largest JSON body either service accepts.
pub const JSON_LIMIT: usize = 64 * 1024;

/// The errors of the routes and extractors in this crate, with the codes and statuses the
/// services use.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// Not JSON at all: syntax, truncation, wrong content type.
    #[error("{0}")]
    MalformedJson(String),
    /// JSON of the wrong shape, or a query string that does not parse.
    #[error("{0}")]
    Validation(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    NotFound(String),
    /// The method the request used.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// An admin route without the right bearer token.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    RebuildInProgress(String),
    #[error("the database is unavailable, try again later")]
    Unavailable(#[source] anyhow::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl EdgeError {
    pub fn code(&self) -> &'static str {
        match self {
            EdgeError::MalformedJson(_) => "malformed_json",
            EdgeError::Validation(_) => "validation_failed",
            EdgeError::PayloadTooLarge { .. } => "payload_too_large",
            EdgeError::NotFound(_) => "not_found",
            EdgeError::MethodNotAllowed(_) => "method_not_allowed",
            EdgeError::Unauthorized(_) => "unauthorized",
            EdgeError::RebuildInProgress(_) => "rebuild_in_progress",
            EdgeError::Unavailable(_) => "unavailable",
            EdgeError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for EdgeError {
    fn status_code(&self) -> StatusCode {
        match self {
            EdgeError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            EdgeError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EdgeError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EdgeError::NotFound(_) => StatusCode::NOT_FOUND,
            EdgeError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            EdgeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            EdgeError::RebuildInProgress(_) => StatusCode::CONFLICT,
            EdgeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            EdgeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            EdgeError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed")
            }
            EdgeError::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "dependency unavailable")
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        if let EdgeError::Unauthorized(_) = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(ErrorBody {
            error: self.code().to_owned(),
            message: self.to_string(),
        })
    }
}

impl From<sqlx::Error> for EdgeError {
    fn from(error: sqlx::Error) -> Self {
        if event_store::is_unavailable(&error) {
            EdgeError::Unavailable(error.into())
        } else {
            EdgeError::Internal(error.into())
        }
    }
}

/// Makes actix's extractors answer a body, path or query they cannot take in the JSON error
/// format: JSON syntax and content-type problems are 400, well-formed JSON of the wrong shape
/// is 422, a body over [`JSON_LIMIT`] is 413, a path whose id is not a uuid names nothing
/// (404, like an unknown id), a query string that does not parse is 422.
pub fn extractors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT)
            .error_handler(json_error),
    )
    .app_data(web::PathConfig::default().error_handler(path_error))
    .app_data(web::QueryConfig::default().error_handler(query_error));
}

fn json_error(error: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let edge = match error {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => EdgeError::PayloadTooLarge { limit },
        JsonPayloadError::Payload(PayloadError::Overflow) => {
            EdgeError::PayloadTooLarge { limit: JSON_LIMIT }
        }
        JsonPayloadError::ContentType => EdgeError::MalformedJson(
            "the body must be sent as Content-Type: application/json".into(),
        ),
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            EdgeError::Validation(format!("invalid body: {e}"))
        }
        JsonPayloadError::Deserialize(e) => {
            EdgeError::MalformedJson(format!("the body is not valid JSON: {e}"))
        }
        other => EdgeError::MalformedJson(format!("cannot read the body: {other}")),
    };
    edge.into()
}

fn path_error(error: PathError, req: &HttpRequest) -> actix_web::Error {
    EdgeError::NotFound(format!("nothing at {}: {error}", req.path())).into()
}

fn query_error(error: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    EdgeError::Validation(format!("invalid query string: {error}")).into()
}

/// A resource whose other methods answer 405 with the JSON error body and the `Allow` header
/// (RFC 9110) that actix derives from the resource's routes.
pub fn resource(
    path: &str,
) -> actix_web::Resource<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<EitherBody<BoxBody>>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::resource(path)
        .wrap(ErrorHandlers::new().handler(StatusCode::METHOD_NOT_ALLOWED, method_not_allowed))
}

/// actix answers a method no route of a resource takes with an empty 405 and an `Allow` header
/// naming the methods that are routed; this keeps the header and gives the JSON body.
fn method_not_allowed<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (req, res) = res.into_parts();
    let mut response = EdgeError::MethodNotAllowed(req.method().to_string()).error_response();
    if let Some(allow) = res.headers().get(header::ALLOW) {
        response.headers_mut().insert(header::ALLOW, allow.clone());
    }
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exhausted_pool_is_unavailable_and_an_unexpected_error_is_opaque() {
        let unavailable = EdgeError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(unavailable.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.code(), "unavailable");
        let internal = EdgeError::Internal(anyhow::anyhow!("password=secret"));
        assert_eq!(internal.to_string(), "internal error");
    }
}
