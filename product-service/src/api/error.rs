//! The one error type of the HTTP API and its JSON body `{ "error": code, "message": text }`.
//!
//! 422 `validation_failed` is for values the domain refuses (price 0, empty name); bodies that
//! are not JSON or of the wrong shape are answered by the shared extractors
//! (`service_kit::error::extractors`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use event_store::StoreError;

/// What running a command can fail with.
type CommandError = event_store::aggregate::CommandError<DomainError>;
pub use service_kit::error::ErrorBody;

use crate::domain::error::DomainError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    VersionConflict(String),
    #[error("a dependency is unavailable: {0}")]
    Unavailable(anyhow::Error),
    #[error("internal error: {0}")]
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation_failed",
            ApiError::NotFound(_) => "not_found",
            ApiError::VersionConflict(_) => "version_conflict",
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
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::VersionConflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %format!("{cause:#}"), "dependency unavailable");
                "the service cannot serve this right now (its database is unreachable, or the \
                 product was written by a newer release of the service); try again shortly"
                    .to_owned()
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %format!("{cause:#}"), "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        HttpResponse::build(self.status_code()).json(ErrorBody {
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
            | DomainError::InvalidCurrency { .. }
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
            CommandError::NewerSchema(e) => ApiError::Unavailable(e),
        }
    }
}
