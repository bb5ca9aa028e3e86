//! The one error type of the HTTP API and its JSON body. Every error a client can cause is a
//! 4xx naming the problem; 5xx are reserved for dependencies (503) and bugs (500, opaque).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use event_store::StoreError;
pub use service_kit::error::ErrorBody;
use uuid::Uuid;

use crate::domain::error::DomainError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Well-formed input that is missing a field, has a field of the wrong type, or breaks a
    /// rule of the domain.
    #[error("{0}")]
    Validation(String),
    #[error("{}", unknown_products_message(.0))]
    UnknownProduct(Vec<Uuid>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    VersionConflict(String),
    #[error("{0}")]
    InvalidTransition(String),
    #[error("{0} is unavailable, try again later")]
    Unavailable(&'static str),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

fn unknown_products_message(ids: &[Uuid]) -> String {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    match ids.as_slice() {
        [one] => format!("product {one} is not in the catalogue"),
        many => format!("products {} are not in the catalogue", many.join(", ")),
    }
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation_failed",
            ApiError::UnknownProduct(_) => "unknown_product",
            ApiError::NotFound(_) => "not_found",
            ApiError::VersionConflict(_) => "version_conflict",
            ApiError::InvalidTransition(_) => "invalid_transition",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code().to_owned(),
            message: self.to_string(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::UnknownProduct(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::VersionConflict(_) | ApiError::InvalidTransition(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed")
            }
            ApiError::Unavailable(what) => {
                tracing::warn!(dependency = what, "dependency unavailable")
            }
            _ => {}
        }
        HttpResponse::build(self.status_code()).json(self.body())
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::OrderNotFound => ApiError::NotFound(error.to_string()),
            DomainError::AlreadyExists { .. } => ApiError::VersionConflict(error.to_string()),
            DomainError::InvalidTransition { .. } => ApiError::InvalidTransition(error.to_string()),
            DomainError::EmptyCustomerId
            | DomainError::CustomerIdTooLong { .. }
            | DomainError::InvalidLineCount { .. }
            | DomainError::InvalidQuantity { .. }
            | DomainError::InvalidPrice { .. }
            | DomainError::MixedCurrencies { .. }
            | DomainError::TotalOverflow => ApiError::Validation(error.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict { .. } => ApiError::VersionConflict(
                "the order was changed concurrently, retry the request".to_owned(),
            ),
            StoreError::Database(e) => e.into(),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if event_store::is_unavailable(&error) {
            ApiError::Unavailable("the database")
        } else {
            ApiError::Internal(error.into())
        }
    }
}

/// What running a command can fail with.
type CommandError = event_store::aggregate::CommandError<DomainError>;

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Domain(e) => e.into(),
            CommandError::Conflict(e) | CommandError::Store(e) => e.into(),
            CommandError::Corrupt(e) => ApiError::Internal(e),
            CommandError::NewerSchema(e) => {
                tracing::warn!(error = %format!("{e:#}"), "an order written by a newer release");
                ApiError::Unavailable("an order written by a newer release of this service")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_unknown_product_is_named_and_several_are_listed() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let one = ApiError::UnknownProduct(vec![a]).to_string();
        assert_eq!(one, format!("product {a} is not in the catalogue"));
        let two = ApiError::UnknownProduct(vec![a, b]).to_string();
        assert_eq!(two, format!("products {a}, {b} are not in the catalogue"));
    }

    #[test]
    fn an_internal_error_hides_its_cause() {
        let error = ApiError::Internal(anyhow::anyhow!("password=secret"));
        assert_eq!(error.body().message, "internal error");
        assert_eq!(error.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn domain_errors_map_to_precise_statuses() {
        use crate::domain::order::OrderStatus;
        let cases = [
            (DomainError::OrderNotFound, StatusCode::NOT_FOUND),
            (
                DomainError::EmptyCustomerId,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                DomainError::InvalidTransition {
                    from: OrderStatus::Rejected,
                    action: "cancel",
                },
                StatusCode::CONFLICT,
            ),
            (
                DomainError::AlreadyExists {
                    order_id: Uuid::nil(),
                },
                StatusCode::CONFLICT,
            ),
        ];
        for (domain, status) in cases {
            assert_eq!(
                ApiError::from(domain.clone()).status_code(),
                status,
                "{domain}"
            );
        }
    }

    #[test]
    fn an_exhausted_pool_is_unavailable_not_internal() {
        let error = ApiError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(error.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code(), "unavailable");
    }
}
