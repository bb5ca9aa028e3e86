//! `/admin/projections`: each projection's checkpoint, lag and rebuild, and starting an online
//! rebuild. Every route needs `Authorization: Bearer <ADMIN_TOKEN>` (401 otherwise); without a
//! configured token a service does not register the routes at all (404).
//!
//! The routes reach only their own [`AdminState`], registered by [`routes`] as `web::Data`, so
//! they do not depend on either service's state.

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use event_store::replay::{ProjectionStatus, RebuildError, RebuildStatus, Rebuilds};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{resource, ApiError, ErrorBody};
use crate::republish::Republisher;

/// What the admin routes reach: the token check and the service's rebuilds.
#[derive(Clone)]
pub struct AdminState {
    is_token: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    rebuilds: Rebuilds,
    republisher: Option<Republisher>,
}

impl AdminState {
    /// `is_token` tells whether a presented bearer token is the admin token; the service's
    /// token type does the comparison (in constant time) and keeps the token out of here.
    pub fn new(
        rebuilds: Rebuilds,
        is_token: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        AdminState {
            is_token: Arc::new(is_token),
            rebuilds,
            republisher: None,
        }
    }

    /// Serves `POST /admin/republish` with `republisher`.
    pub fn with_republisher(mut self, republisher: Republisher) -> Self {
        self.republisher = Some(republisher);
        self
    }
}

/// Registers `state` and the admin routes; call it only when an admin token is configured.
pub fn routes(cfg: &mut web::ServiceConfig, state: AdminState) {
    cfg.app_data(web::Data::new(state))
        .service(resource("/admin/projections").route(web::get().to(list_projections)))
        .service(
            resource("/admin/projections/{name}/rebuild").route(web::post().to(rebuild_projection)),
        )
        .service(resource("/admin/republish").route(web::post().to(republish)));
}

/// Proof that a request carries the admin token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AdminState>>() else {
            return ready(Err(ApiError::NotFound(format!(
                "no route for {} {}",
                req.method(),
                req.path()
            ))));
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        ready(match presented {
            Some(candidate) if (state.is_token)(candidate) => Ok(Admin),
            Some(_) => Err(ApiError::Unauthorized(
                "the admin token is wrong".to_owned(),
            )),
            None => Err(ApiError::Unauthorized(
                "send the admin token as Authorization: Bearer <ADMIN_TOKEN>".to_owned(),
            )),
        })
    }
}

/// Every projection.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectionList {
    pub projections: Vec<ProjectionView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectionView {
    #[schema(example = "orders")]
    pub name: String,
    /// `events` (this service's own events, from its store) or `inbox` (the other service's
    /// events as recorded in the inbox).
    #[schema(example = "events")]
    pub source: String,
    /// The tables the projection writes.
    pub tables: Vec<String>,
    /// `events`: the projection's checkpoint (a store position). `inbox`: the last inbox
    /// sequence number; such a projection is applied in the transaction that records the event.
    pub checkpoint: i64,
    /// Events stored beyond the checkpoint (always 0 for `inbox`).
    pub lag: i64,
    /// A rebuild holds the projection's rebuild lock now (in this process or another, such as
    /// the `replay` command).
    pub rebuild_running: bool,
    /// The last rebuild this process started, if any.
    pub last_rebuild: Option<RebuildView>,
}

/// A rebuild started by this process.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RebuildView {
    #[schema(example = "orders")]
    pub projection: String,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    #[schema(example = "running")]
    pub state: String,
    /// While running: `building` (pages into the shadow tables) or `swapping`.
    pub phase: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub events_read: u64,
    /// Events in the source when the rebuild started (an estimate of the work).
    pub events_total: u64,
    /// Rows in the rebuilt tables, once succeeded.
    pub rows_written: Option<u64>,
    pub seconds: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl From<RebuildStatus> for RebuildView {
    fn from(s: RebuildStatus) -> Self {
        RebuildView {
            projection: s.projection,
            state: s.state.as_str().to_owned(),
            phase: s.phase.map(|p| p.as_str().to_owned()),
            started_at: s.started_at,
            finished_at: s.finished_at,
            events_read: s.events_read,
            events_total: s.events_total,
            rows_written: s.rows_written,
            seconds: s.seconds,
            error: s.error,
        }
    }
}

impl From<ProjectionStatus> for ProjectionView {
    fn from(p: ProjectionStatus) -> Self {
        ProjectionView {
            name: p.name,
            source: p.source.to_owned(),
            tables: p.tables,
            checkpoint: p.checkpoint,
            lag: p.lag,
            rebuild_running: p.rebuild_running,
            last_rebuild: p.last_rebuild.map(RebuildView::from),
        }
    }
}

/// Each projection's checkpoint, lag and rebuild.
#[utoipa::path(
    get,
    path = "/admin/projections",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, body = ProjectionList),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "No ADMIN_TOKEN is configured", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn list_projections(
    _admin: Admin,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let projections = state.rebuilds.overview().await?;
    Ok(HttpResponse::Ok().json(ProjectionList {
        projections: projections.into_iter().map(ProjectionView::from).collect(),
    }))
}

/// Starts rebuilding a projection from the events in this service's database, online: reads
/// keep being answered from the old rows and writes keep being accepted until the rebuilt
/// tables are swapped in, in one short transaction. Follow it on `GET /admin/projections`.
#[utoipa::path(
    post,
    path = "/admin/projections/{name}/rebuild",
    tag = "admin",
    security(("admin_token" = [])),
    params(("name" = String, Path, description = "A projection name (see GET /admin/projections)")),
    responses(
        (status = 202, description = "Started", body = RebuildView,
            headers(("Location" = String, description = "/admin/projections"))),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "Unknown projection, or no ADMIN_TOKEN is configured", body = ErrorBody),
        (status = 409, description = "A rebuild of this projection is already running (`rebuild_in_progress`)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn rebuild_projection(
    _admin: Admin,
    state: web::Data<AdminState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match state.rebuilds.start(&name).await {
        Ok(status) => Ok(HttpResponse::Accepted()
            .insert_header((header::LOCATION, "/admin/projections"))
            .json(RebuildView::from(status))),
        Err(RebuildError::Unknown(name)) => Err(ApiError::NotFound(format!(
            "no projection is named {name:?}"
        ))),
        Err(e @ RebuildError::InProgress(_)) => Err(ApiError::Conflict {
            code: "rebuild_in_progress",
            message: e.to_string(),
        }),
        Err(RebuildError::Failed(e)) => match e.downcast::<sqlx::Error>() {
            Ok(db) => Err(db.into()),
            Err(e) => Err(ApiError::Internal(e)),
        },
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}

/// Where `POST /admin/republish` starts.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct RepublishRequest {
    /// Send the events after this store position (0, the default: all of them).
    #[serde(default)]
    pub from_position: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RepublishReport {
    pub from_position: i64,
    /// Events sent again.
    pub republished: usize,
}

/// Sends this service's events after `from_position` to NATS again, for a broker replaced from
/// scratch. Consumers take each event once however often it is sent. Answers when done.
#[utoipa::path(
    post,
    path = "/admin/republish",
    tag = "admin",
    security(("admin_token" = [])),
    request_body(content = RepublishRequest, description = "`{}` sends every event"),
    responses(
        (status = 200, body = RepublishReport),
        (status = 400, description = "No JSON body", body = ErrorBody),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "No ADMIN_TOKEN is configured", body = ErrorBody),
        (status = 422, description = "A negative position", body = ErrorBody),
        (status = 503, description = "Database or NATS unavailable", body = ErrorBody),
    )
)]
pub async fn republish(
    _admin: Admin,
    state: web::Data<AdminState>,
    body: web::Json<RepublishRequest>,
) -> Result<HttpResponse, ApiError> {
    let from_position = body.from_position;
    if from_position < 0 {
        return Err(ApiError::Validation(
            "from_position must be 0 or more".to_owned(),
        ));
    }
    let Some(republisher) = &state.republisher else {
        return Err(ApiError::NotFound(
            "republishing is not set up here".to_owned(),
        ));
    };
    match republisher.run(from_position).await {
        Ok(republished) => Ok(HttpResponse::Ok().json(RepublishReport {
            from_position,
            republished,
        })),
        Err(cause) => Err(ApiError::Unavailable {
            what: "the database or NATS",
            cause,
        }),
    }
}
