//! Liveness (the process answers) and readiness (its dependencies answer).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use async_nats::connection::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{resource, AppState};

/// Longest a readiness probe waits for the database.
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/health/live").route(web::get().to(live)))
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The process is running.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "Always", body = Live)))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Live {
        status: "ok".to_owned(),
    })
}

/// The database answers `SELECT 1` and the NATS connection is up.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "A dependency is down; the body says which", body = Ready),
    ))]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let probe = sqlx::query("SELECT 1").execute(&state.pool);
    let database = matches!(
        tokio::time::timeout(DB_PROBE_TIMEOUT, probe).await,
        Ok(Ok(_))
    );
    let nats = state.nats.connection_state() == State::Connected;
    let word = |up: bool| if up { "up" } else { "down" }.to_owned();
    let mut body = Ready {
        status: "ready".to_owned(),
        database: word(database),
        nats: word(nats),
        error: None,
        message: None,
    };
    if database && nats {
        return HttpResponse::Ok().json(body);
    }
    let down: Vec<&str> = [(database, "database"), (nats, "nats")]
        .into_iter()
        .filter(|(up, _)| !up)
        .map(|(_, name)| name)
        .collect();
    body.status = "unavailable".to_owned();
    body.error = Some("unavailable".to_owned());
    body.message = Some(format!("down: {}", down.join(", ")));
    HttpResponse::ServiceUnavailable().json(body)
}
