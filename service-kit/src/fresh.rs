//! Read-your-writes: a client that wrote version N asks for `?min_version=N` and the read
//! waits, briefly, until the read model has applied it.

use std::future::Future;
use std::time::Duration;

use actix_web::{HttpResponse, HttpResponseBuilder};
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
pub struct Fresh<T> {
    pub row: Option<T>,
    pub stale: bool,
}

impl<T> Fresh<T> {
    /// The row, or `not_found` when there is none.
    pub fn found<E>(self, not_found: impl FnOnce() -> E) -> Result<(T, bool), E> {
        match self.row {
            Some(row) => Ok((row, self.stale)),
            None => Err(not_found()),
        }
    }
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
    let fresh = read_at_least(min_version, version, fetch).await?;
    let (row, stale) = fresh.found(not_found)?;
    let mut response = HttpResponse::Ok();
    mark_stale(&mut response, stale);
    Ok(response.json(view(row)?))
}

/// Reads with `fetch` until the row has `version(row) >= min_version` or the wait is over.
/// Without `min_version` it reads once.
pub async fn read_at_least<T, E, F, Fut>(
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

/// Marks a response as older than the version asked for.
pub fn mark_stale(builder: &mut HttpResponseBuilder, stale: bool) {
    if stale {
        builder.insert_header((STALE_HEADER, "true"));
    }
}
