//! `GET /health/live` and `GET /health/ready`: ready when the database and NATS answer and
//! neither the relay nor a projector has left an event unprocessed for longer than
//! `READY_MAX_LAG_SECONDS`.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Readiness of each dependency; when not ready, `error` and `message` say which is down.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// `up` or `down`.
    pub database: &'static str,
    /// `up` or `down`.
    pub nats: &'static str,
    /// The relay or projectors holding an event unprocessed for longer than the limit, such
    /// as `projection products (41 s)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub behind: Vec<String>,
    /// Events of the other service dead-lettered because another event already holds their
    /// stream version (a forged message, or the other service's database restored from a
    /// backup): how many, and the latest few, each naming the stream, the version and both
    /// event ids. They need a person; the service stays ready, since it still serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_conflicts: Option<VersionConflicts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionConflicts {
    pub count: i64,
    pub latest: Vec<String>,
}

/// The process is running.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, body = Liveness)))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { status: "ok" })
}

/// The database answers, NATS is connected, and no reader is behind by more than the limit.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn ready(state: web::Data<ApiState>) -> HttpResponse {
    let database = sqlx::query("SELECT 1").execute(&state.pool).await.is_ok();
    let nats = state.nats.connection_state() == async_nats::connection::State::Connected;
    let behind = match state.ready_max_lag {
        Some(max) if database => behind(&state, max).await,
        _ => Vec::new(),
    };
    let up = |ok: bool| if ok { "up" } else { "down" };
    let down: Vec<&str> = [(database, "database"), (nats, "nats")]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, name)| name)
        .collect();
    let mut problems = Vec::new();
    if !down.is_empty() {
        problems.push(format!("down: {}", down.join(", ")));
    }
    if !behind.is_empty() {
        problems.push(format!("behind: {}", behind.join(", ")));
    }
    let version_conflicts = if database {
        conflicts(&state).await
    } else {
        None
    };
    let ready = problems.is_empty();
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        database: up(database),
        nats: up(nats),
        behind,
        version_conflicts,
        error: (!ready).then_some("unavailable"),
        message: (!ready).then(|| problems.join("; ")),
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// The readers further behind than `max` (none when the lag cannot be measured: the database
/// probe reports that).
async fn behind(state: &ApiState, max: Duration) -> Vec<String> {
    let stuck = event_store::metrics::stuck(&state.pool, &state.readers, max);
    match tokio::time::timeout(Duration::from_secs(2), stuck).await {
        Ok(Ok(stuck)) => stuck
            .iter()
            .map(|(reader, lag)| format!("{reader} ({:.0} s)", lag.seconds))
            .collect(),
        _ => Vec::new(),
    }
}

/// The version conflicts dead-lettered so far, if any.
async fn conflicts(state: &ApiState) -> Option<VersionConflicts> {
    let found = event_store::consumer::version_conflicts(&state.pool, 3);
    match tokio::time::timeout(Duration::from_secs(2), found).await {
        Ok(Ok((count, latest))) if count > 0 => Some(VersionConflicts { count, latest }),
        _ => None,
    }
}
