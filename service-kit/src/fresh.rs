//! Read-your-writes: a client that wrote version N asks for `?min_version=N` and the read
//! waits, briefly, until the read model has applied it.

use std::future::Future;
use std::time::Duration;

use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use utoipa::IntoParams;

use crate::error::ApiError;

const POLL: Duration = Duration::from_millis(20);
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Header set when a read gave up waiting and answers with an older version.
pub const STALE_HEADER: &str = "X-Stale";

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MinVersion {
    /// Wait (up to 5 s) until the entity exists with at least this version. On timeout the
    /// response carries what is there with `X-Stale: true`, or is a 404 if nothing is.
    pub min_version: Option<i64>,
}

/// A row read from a read model, and whether it is older than the caller asked for.
struct Fresh<T> {
    row: Option<T>,
    stale: bool,
}

/// A `GET` of one read-model row: read with `fetch` as [`read_at_least`] does, 404 with
/// `not_found` when there is no row, else the row as `view` renders it, marked stale when it
/// is older than `min_version`.
pub async fn answer_row<T, V, F, Fut>(
    min_version: Option<i64>,
    version: impl Fn(&T) -> i64,
    fetch: F,
    not_found: impl FnOnce() -> ApiError,
    view: impl FnOnce(T) -> Result<V, ApiError>,
) -> Result<HttpResponse, ApiError>
where
    V: Serialize,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>, sqlx::Error>>,
{
    let Fresh { row, stale } = read_at_least(min_version, version, fetch).await?;
    let row = row.ok_or_else(not_found)?;
    let mut response = HttpResponse::Ok();
    if stale {
        response.insert_header((STALE_HEADER, "true"));
    }
    Ok(response.json(view(row)?))
}

/// Reads with `fetch` until the row has `version(row) >= min_version` or the wait is over.
/// Without `min_version` it reads once.
async fn read_at_least<T, E, F, Fut>(
    min_version: Option<i64>,
    version: impl Fn(&T) -> i64,
    fetch: F,
) -> Result<Fresh<T>, E>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
{
    let Some(min) = min_version else {
        return Ok(Fresh {
            row: fetch().await?,
            stale: false,
        });
    };
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        let row = fetch().await?;
        if row.as_ref().is_some_and(|r| version(r) >= min) {
            return Ok(Fresh { row, stale: false });
        }
        if Instant::now() + POLL > deadline {
            return Ok(Fresh { row, stale: true });
        }
        tokio::time::sleep(POLL).await;
    }
}
