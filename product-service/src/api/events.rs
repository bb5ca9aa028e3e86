//! `GET /products/{id}/events`: what the event store holds for one product, as stored.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use event_store::RecordedEvent;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{product_not_found, ApiError, ErrorBody};
use super::{resource, AppState};
use crate::domain::product;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/products/{id}/events").route(web::get().to(history)));
}

/// One stored event.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredEvent {
    /// Global position in this service's store. Increasing, but with gaps.
    pub position: i64,
    /// Version within the product's stream, 1, 2, 3, ...
    pub version: i64,
    #[serde(rename = "type")]
    #[schema(example = "ProductCreated")]
    pub event_type: String,
    pub event_id: Uuid,
    /// The version of the payload's shape, as it was written: older events keep theirs
    /// (docs/adr/0007-evolving-events.md).
    pub schema_version: i32,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// `correlation_id` (the request or saga that caused it), `causation_id`, `traceparent`.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl From<RecordedEvent> for StoredEvent {
    fn from(e: RecordedEvent) -> Self {
        StoredEvent {
            position: e.position,
            version: e.stream_version,
            event_type: e.event_type,
            event_id: e.event_id,
            schema_version: e.schema_version,
            payload: e.payload,
            metadata: serde_json::to_value(&e.metadata).unwrap_or_default(),
            recorded_at: e.recorded_at,
        }
    }
}

/// The product stream's history, oldest first, straight from the event store.
#[utoipa::path(
    get,
    path = "/products/{id}/events",
    tag = "products",
    params(("id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 200, body = [StoredEvent]),
        (status = 404, description = "No events for this product", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn history(
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let events = state
        .store
        .read_stream(&product::stream_id(id.into_inner()), 1)
        .await?;
    if events.is_empty() {
        return Err(product_not_found());
    }
    let body: Vec<StoredEvent> = events.into_iter().map(StoredEvent::from).collect();
    Ok(HttpResponse::Ok().json(body))
}
