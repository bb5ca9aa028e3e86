//! How order-service's domain refusals answer over HTTP. The error type and its JSON body are
//! the one both services share ([`service_kit::error::ApiError`]); this adds order-service's
//! own codes, `unknown_product` and `invalid_transition`.

pub use service_kit::error::{ApiError, ErrorBody};
use uuid::Uuid;

use crate::domain::error::DomainError;

/// 422 `unknown_product`: an order names products the catalogue does not hold.
pub fn unknown_products(ids: &[Uuid]) -> ApiError {
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let message = match ids.as_slice() {
        [one] => format!("product {one} is not in the catalogue"),
        many => format!("products {} are not in the catalogue", many.join(", ")),
    };
    ApiError::Unprocessable {
        code: "unknown_product",
        message,
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::OrderNotFound => ApiError::NotFound(error.to_string()),
            DomainError::AlreadyExists { .. } => ApiError::VersionConflict(error.to_string()),
            DomainError::InvalidTransition { .. } => ApiError::Conflict {
                code: "invalid_transition",
                message: error.to_string(),
            },
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

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::ResponseError;

    use super::*;

    #[test]
    fn one_unknown_product_is_named_and_several_are_listed() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let one = unknown_products(&[a]).to_string();
        assert_eq!(one, format!("product {a} is not in the catalogue"));
        let two = unknown_products(&[a, b]).to_string();
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
