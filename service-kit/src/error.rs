//! The one error type of both services' HTTP APIs, [`ApiError`], and the JSON body it answers
//! in, `{ "error": code, "message": text }`. Every error a client can cause is a 4xx naming the
//! problem; 5xx are kept for dependencies (503) and bugs (500, with an opaque message). Each
//! service adds only its `From<DomainError>` mapping; the extractors, the shared routes and the
//! idempotency middleware answer with the same type, and [`resource`]'s other methods answer
//! 405 with it.

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use event_store::aggregate::CommandError;
use event_store::StoreError;
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

/// Every error either service's HTTP API answers, with its status and code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed_json`: not JSON at all (syntax, truncation, wrong content type).
    #[error("{0}")]
    MalformedJson(String),
    /// 422 `validation_failed`: JSON of the wrong shape, a query string that does not parse,
    /// or a value the domain refuses.
    #[error("{0}")]
    Validation(String),
    /// 422 with a code of the service's own (order-service's `unknown_product`, the
    /// middleware's `idempotency_key_reused`): well-formed input that cannot be acted on.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// 400 `invalid_idempotency_key`.
    #[error("{0}")]
    InvalidIdempotencyKey(String),
    /// 413 `payload_too_large`.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed`, naming the method the request used.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// 401 `unauthorized`: an admin route without the right bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 409 `version_conflict`: the expected version did not hold, or the aggregate kept
    /// changing while the command was retried.
    #[error("{0}")]
    VersionConflict(String),
    /// 409 with a code of its own (`invalid_transition`, `rebuild_in_progress`,
    /// `idempotency_key_in_flight`): the request is valid but the state it meets refuses it.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 503 `unavailable`: a dependency (`what`) cannot serve this right now; the cause is
    /// logged, not answered.
    #[error("{what} is unavailable, try again later")]
    Unavailable {
        what: &'static str,
        #[source]
        cause: anyhow::Error,
    },
    /// 500 `internal`: a bug; the cause is logged, not answered.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::Validation(_) => "validation_failed",
            ApiError::Unprocessable { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::VersionConflict(_) => "version_conflict",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The body this error answers with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code().to_owned(),
            message: self.to_string(),
        }
    }

    /// Refuses text Postgres cannot store (a NUL character, in `text` or `jsonb`) as a
    /// validation error naming `field`, before it fails the write as a 500.
    pub fn storable(field: &str, value: &str) -> Result<(), ApiError> {
        if event_store::validate::text_has_nul(value) {
            return Err(ApiError::Validation(format!(
                "{field} must not contain NUL characters"
            )));
        }
        Ok(())
    }

    /// 503 for the database, with what the database said as the logged cause.
    pub fn database_unavailable(cause: impl Into<anyhow::Error>) -> Self {
        ApiError::Unavailable {
            what: "the database",
            cause: cause.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::InvalidIdempotencyKey(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Validation(_) | ApiError::Unprocessable { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::VersionConflict(_) | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed")
            }
            ApiError::Unavailable { what, cause } => {
                tracing::warn!(
                    dependency = what,
                    error = format!("{cause:#}"),
                    "dependency unavailable"
                )
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::Unauthorized(_) = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(self.body())
    }
}

/// The one classification of database errors at the HTTP edge: what
/// [`event_store::is_unavailable`] names is 503, the rest is a bug (500).
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if event_store::is_unavailable(&error) {
            ApiError::database_unavailable(error)
        } else {
            ApiError::Internal(error.into())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict { .. } => ApiError::VersionConflict(format!(
                "{error}: it changed while this request was applied; retry the request"
            )),
            StoreError::Database(e) => e.into(),
            other => ApiError::Internal(other.into()),
        }
    }
}

/// A command's failure: the domain's refusal through the service's own mapping (`E`), the
/// store's through the one above; a stored event this release cannot read is 500 if it is
/// corrupt and 503 if a newer release wrote it (this one cannot serve it until it is updated).
impl<E> From<CommandError<E>> for ApiError
where
    E: std::error::Error + Into<ApiError> + 'static,
{
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Domain(e) => e.into(),
            CommandError::Conflict(e) | CommandError::Store(e) => e.into(),
            CommandError::Corrupt(e) => ApiError::Internal(e),
            CommandError::NewerSchema(cause) => ApiError::Unavailable {
                what: "a record written by a newer release of this service",
                cause,
            },
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
    let error = match error {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit },
        JsonPayloadError::Payload(PayloadError::Overflow) => {
            ApiError::PayloadTooLarge { limit: JSON_LIMIT }
        }
        JsonPayloadError::ContentType => ApiError::MalformedJson(
            "the body must be sent as Content-Type: application/json".into(),
        ),
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::Validation(format!("invalid body: {e}"))
        }
        JsonPayloadError::Deserialize(e) => {
            ApiError::MalformedJson(format!("the body is not valid JSON: {e}"))
        }
        other => ApiError::MalformedJson(format!("cannot read the body: {other}")),
    };
    error.into()
}

fn path_error(error: PathError, req: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound(format!("nothing at {}: {error}", req.path())).into()
}

fn query_error(error: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::Validation(format!("invalid query string: {error}")).into()
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
    let mut response = ApiError::MethodNotAllowed(req.method().to_string()).error_response();
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
        let unavailable = ApiError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(unavailable.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.code(), "unavailable");
        let internal = ApiError::Internal(anyhow::anyhow!("password=secret"));
        assert_eq!(internal.to_string(), "internal error");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("refused")]
    struct Refused;

    impl From<Refused> for ApiError {
        fn from(_: Refused) -> Self {
            ApiError::Conflict {
                code: "refused",
                message: "refused".to_owned(),
            }
        }
    }

    #[test]
    fn a_command_error_answers_with_the_domain_mapping_or_the_store_classification() {
        let answer = |error: CommandError<Refused>| {
            let error = ApiError::from(error);
            (error.status_code().as_u16(), error.code())
        };
        assert_eq!(answer(CommandError::Domain(Refused)), (409, "refused"));
        let conflict = StoreError::Conflict {
            stream_id: "order-1".to_owned(),
            expected: event_store::ExpectedVersion::Exact(1),
            actual: 2,
        };
        assert_eq!(
            answer(CommandError::Conflict(conflict)),
            (409, "version_conflict")
        );
        let gone = StoreError::Database(sqlx::Error::PoolClosed);
        assert_eq!(answer(CommandError::Store(gone)), (503, "unavailable"));
        let newer = CommandError::NewerSchema(anyhow::anyhow!("schema 9"));
        assert_eq!(answer(newer), (503, "unavailable"));
        let corrupt = CommandError::Corrupt(anyhow::anyhow!("not JSON"));
        assert_eq!(answer(corrupt), (500, "internal"));
    }
}
