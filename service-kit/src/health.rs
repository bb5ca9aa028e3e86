//! `GET /health/live` (the process answers) and `GET /health/ready`: ready when the database
//! and NATS answer, every background task is running, and neither the relay nor a projector
//! has left an event unprocessed for longer than `READY_MAX_LAG_SECONDS`.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use async_nats::connection::State;
use event_store::metrics::Reader;
use event_store::repair::Gaps;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::error::resource;
use crate::tasks::Failures;

/// Longest a readiness probe waits for the database.
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What readiness looks at.
#[derive(Clone)]
pub struct Health {
    pub pool: PgPool,
    /// Publishing is the relay's job; this connection is only asked whether it is up.
    pub nats: async_nats::Client,
    /// The relay and projectors whose lag readiness checks.
    pub readers: Vec<Reader>,
    /// Readiness fails when one of them is this far behind; `None`: never for lag.
    pub ready_max_lag: Option<Duration>,
    /// Background tasks that stopped with a panic.
    pub failures: Failures,
    /// Gaps in the other service's events the consumer noticed and has asked for.
    pub gaps: Gaps,
}

/// A gap open for longer than this is named by readiness.
pub const UNREPAIRED_AFTER: Duration = Duration::from_secs(30);

pub fn routes(cfg: &mut web::ServiceConfig, health: Health) {
    cfg.app_data(web::Data::new(health))
        .service(resource("/health/live").route(web::get().to(live)))
        .service(resource("/health/ready").route(web::get().to(ready)));
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Live {
    #[schema(example = "ok")]
    pub status: String,
}

/// Readiness of each dependency; when something is down, also the usual `error` and `message`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// `ready` or `unavailable`.
    pub status: String,
    /// `up` or `down`.
    pub database: String,
    /// `up` or `down`.
    pub nats: String,
    /// The relay or projectors holding an event unprocessed for longer than the limit, such
    /// as `projection orders (41 s)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub behind: Vec<String>,
    /// Background tasks (relay, consumer, notifier) that stopped with a panic; the service
    /// is shutting down so that its supervisor starts it whole again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tasks: Vec<String>,
    /// Events of the other service dead-lettered because another event already holds their
    /// stream version (a forged message, or the other service's database restored from a
    /// backup): how many, and the latest few, each naming the stream, the version and both
    /// event ids. They need a person; the service stays ready, since it still serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_conflicts: Option<VersionConflicts>,
    /// Gaps in the other service's events (lost by the broker) noticed more than 30 s ago and
    /// still not repaired: the producer is asked again and again (is it running?). The service
    /// stays ready; its copies of the other's data are behind until they are repaired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unrepaired: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionConflicts {
    pub count: i64,
    pub latest: Vec<String>,
}

/// The process is running.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "Always", body = Live)))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Live {
        status: "ok".to_owned(),
    })
}

/// The database answers `SELECT 1`, the NATS connection is up, every background task runs,
/// and neither the relay nor a projector has left an event unprocessed for longer than
/// `READY_MAX_LAG_SECONDS`.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "A dependency is down, a task failed or a reader is behind; the body says which", body = Ready),
    ))]
pub async fn ready(health: web::Data<Health>) -> HttpResponse {
    let probe = sqlx::query("SELECT 1").execute(&health.pool);
    let database = matches!(
        tokio::time::timeout(DB_PROBE_TIMEOUT, probe).await,
        Ok(Ok(_))
    );
    let nats = health.nats.connection_state() == State::Connected;
    let behind = match health.ready_max_lag {
        Some(max) if database => behind(&health, max).await,
        _ => Vec::new(),
    };
    let version_conflicts = if database {
        conflicts(&health).await
    } else {
        None
    };
    let word = |up: bool| if up { "up" } else { "down" }.to_owned();
    let mut body = Ready {
        status: "ready".to_owned(),
        database: word(database),
        nats: word(nats),
        behind,
        failed_tasks: health.failures.names(),
        version_conflicts,
        unrepaired: health
            .gaps
            .older_than(UNREPAIRED_AFTER, std::time::Instant::now()),
        error: None,
        message: None,
    };
    if database && nats && body.behind.is_empty() && body.failed_tasks.is_empty() {
        return HttpResponse::Ok().json(body);
    }
    let down: Vec<&str> = [(database, "database"), (nats, "nats")]
        .into_iter()
        .filter(|(up, _)| !up)
        .map(|(_, name)| name)
        .collect();
    let mut problems = Vec::new();
    if !down.is_empty() {
        problems.push(format!("down: {}", down.join(", ")));
    }
    if !body.failed_tasks.is_empty() {
        problems.push(format!("failed: {}", body.failed_tasks.join(", ")));
    }
    if !body.behind.is_empty() {
        problems.push(format!("behind: {}", body.behind.join(", ")));
    }
    body.status = "unavailable".to_owned();
    body.error = Some("unavailable".to_owned());
    body.message = Some(problems.join("; "));
    HttpResponse::ServiceUnavailable().json(body)
}

/// The readers further behind than `max` (none when the lag cannot be measured in time: the
/// database probe above reports that).
async fn behind(health: &Health, max: Duration) -> Vec<String> {
    let stuck = event_store::metrics::stuck(&health.pool, &health.readers, max);
    match tokio::time::timeout(DB_PROBE_TIMEOUT, stuck).await {
        Ok(Ok(stuck)) => stuck
            .iter()
            .map(|(reader, lag)| format!("{reader} ({:.0} s)", lag.seconds))
            .collect(),
        _ => Vec::new(),
    }
}

/// The version conflicts dead-lettered so far, if any.
async fn conflicts(health: &Health) -> Option<VersionConflicts> {
    let found = event_store::consumer::version_conflicts(&health.pool, 3);
    match tokio::time::timeout(DB_PROBE_TIMEOUT, found).await {
        Ok(Ok((count, latest))) if count > 0 => Some(VersionConflicts { count, latest }),
        _ => None,
    }
}
