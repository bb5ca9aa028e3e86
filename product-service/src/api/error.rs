//! How product-service's domain refusals answer over HTTP. The error type and its JSON body
//! are the one both services share ([`service_kit::error::ApiError`]).
//!
//! 422 `validation_failed` is for values the domain refuses (price 0, empty name); bodies that
//! are not JSON or of the wrong shape are answered by the shared extractors
//! (`service_kit::error::extractors`).

pub use service_kit::error::{ApiError, ErrorBody};

use crate::domain::error::DomainError;

/// 404 for a product id that names nothing.
pub fn product_not_found() -> ApiError {
    ApiError::NotFound("product not found".to_owned())
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::ProductNotFound => product_not_found(),
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
