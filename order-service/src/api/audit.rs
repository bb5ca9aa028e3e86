//! `GET /admin/audit`: the consistency audit (`crate::audit`) as JSON, behind the admin token.

use actix_web::{web, HttpResponse};
use service_kit::admin::Admin;

use super::error::{ApiError, ErrorBody};
use super::{resource, AppState};
use crate::audit::{self, Audit, AuditError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/admin/audit").route(web::get().to(run_audit)));
}

/// Compares every product of the catalogue with product-service's own record (at
/// PRODUCT_SERVICE_URL): C, the share that agrees, and why each other product does not
/// (`missing`, `behind`, `ahead`, `diverged`, `unexpected`). Also sets the
/// `audit_consistency` gauge at `/metrics`. A snapshot of a live system: products written
/// moments ago may show as `missing` or `behind` until the catalogue catches up.
#[utoipa::path(
    get,
    path = "/admin/audit",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The audit, whatever C is", body = Audit),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "No ADMIN_TOKEN is configured", body = ErrorBody),
        (status = 503, description = "The database or product-service unavailable", body = ErrorBody),
    )
)]
pub async fn run_audit(
    _admin: Admin,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    match audit::run(&state.pool, &state.product_service).await {
        Ok(audit) => Ok(HttpResponse::Ok().json(audit)),
        Err(AuditError::Catalogue(e)) => Err(e.into()),
        Err(AuditError::ProductService(cause)) => Err(ApiError::Unavailable {
            what: "product-service",
            cause,
        }),
    }
}
