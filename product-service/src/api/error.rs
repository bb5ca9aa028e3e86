//! The one error type of the HTTP API and its JSON body `{ "error": code, "message": text }`.
//!
//! 400 `malformed_json` is for bodies that are not JSON at all (syntax, truncation, wrong
//! content type); 422 `validation_failed` is for JSON of the wrong shape (missing field, wrong
//! type) and for values the domain refuses (price 0, empty name).

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use event_store::StoreError;

/// Largest JSON body accepted.
pub const JSON_LIMIT: usize = 64 * 1024;

/// What running a command can fail with.
type CommandError = event_store::aggregate::CommandError<DomainError>;
pub use service_kit::error::ErrorBody;

use crate::domain::error::DomainError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    MalformedJson(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    VersionConflict(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// An admin route without the right bearer token.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    RebuildInProgress(String),
    #[error("a dependency is unavailable: {0}")]
    Unavailable(anyhow::Error),
    #[error("internal error: {0}")]
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::Validation(_) => "validation_failed",
            ApiError::NotFound(_) => "not_found",
            ApiError::VersionConflict(_) => "version_conflict",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::RebuildInProgress(_) => "rebuild_in_progress",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn product_not_found() -> Self {
        ApiError::NotFound("product not found".to_owned())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::VersionConflict(_) | ApiError::RebuildInProgress(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %format!("{cause:#}"), "dependency unavailable");
                "the service cannot reach its database; try again shortly".to_owned()
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        if let ApiError::Unauthorized(_) = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response.json(ErrorBody {
            error: self.code().to_owned(),
            message,
        })
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::ProductNotFound => ApiError::product_not_found(),
            DomainError::AlreadyExists { .. } => ApiError::VersionConflict(e.to_string()),
            DomainError::EmptyName
            | DomainError::NameTooLong { .. }
            | DomainError::InvalidPrice { .. }
            | DomainError::InvalidQuantity { .. }
            | DomainError::StockOverflow { .. }
            | DomainError::InsufficientStock { .. } => ApiError::Validation(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => ApiError::VersionConflict(format!(
                "the product kept changing while this request was applied ({e}); retry"
            )),
            e if e.is_transient() => ApiError::Unavailable(e.into()),
            e => ApiError::Internal(e.into()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e).into()
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Domain(e) => e.into(),
            CommandError::Conflict(e) | CommandError::Store(e) => e.into(),
            CommandError::Corrupt(e) => ApiError::Internal(e),
        }
    }
}

/// actix's own JSON extractor errors, answered in the API's format.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit: *limit },
        JsonPayloadError::ContentType => ApiError::MalformedJson(
            "the request body must be JSON with Content-Type: application/json".to_owned(),
        ),
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::Validation(e.to_string()),
        JsonPayloadError::Deserialize(e) => {
            ApiError::MalformedJson(format!("the request body is not valid JSON: {e}"))
        }
        other => ApiError::MalformedJson(format!("the request body cannot be read: {other}")),
    };
    api.into()
}

/// A path segment that does not parse (a malformed uuid) names nothing that exists.
pub fn path_error(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound(format!("no such resource: {err}")).into()
}

pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::Validation(format!("invalid query string: {err}")).into()
}
