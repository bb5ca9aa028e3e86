//! The producer's side of repairs: every replica of a service subscribes to its repair subject
//! in one queue group, so one of them answers each request, from the store. (The store is the
//! same whichever replica reads it, so the answer does not need the relay's leader; the
//! events it sends again go out under repair message ids and are taken once by the inbox.)

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Reason, Reply, Request};
use crate::relay::{publish, RelayConfig, Sending};
use crate::retry::Backoff;
use crate::EventStore;

/// Events read and published per round of a repair.
const PAGE: i64 = 500;
/// Most events one request sends again; a consumer still short asks again for the rest.
const MAX_EVENTS: usize = 50_000;
const QUEUE_GROUP: &str = "repair";

/// Answers repair requests until `shutdown`, resubscribing after the connection's errors.
pub async fn serve(
    store: &EventStore,
    js: &jetstream::Context,
    config: &RelayConfig,
    shutdown: &CancellationToken,
) {
    let client = js.client();
    let mut backoff = Backoff::default();
    while !shutdown.is_cancelled() {
        let subject = config.repair_subject();
        let mut requests = match client.queue_subscribe(subject, QUEUE_GROUP.into()).await {
            Ok(subscription) => subscription,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take repair requests; retrying");
                backoff.wait(shutdown).await;
                continue;
            }
        };
        backoff.reset();
        loop {
            let request = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = requests.next() => next,
            };
            let Some(message) = request else { break };
            let reply = match serde_json::from_slice::<Request>(&message.payload) {
                Ok(request) => answer(store, js, config, request).await,
                Err(e) => Reply::Refused {
                    error: format!("not a repair request: {e}"),
                },
            };
            if let (Some(to), Ok(body)) = (message.reply, serde_json::to_vec(&reply)) {
                if let Err(e) = client.publish(to, body.into()).await {
                    tracing::debug!(error = %e, "cannot answer a repair request");
                }
            }
        }
    }
}

async fn answer(
    store: &EventStore,
    js: &jetstream::Context,
    config: &RelayConfig,
    request: Request,
) -> Reply {
    tracing::info!(?request, "repair requested");
    let done = match &request {
        Request::Which { stream_id, version } => {
            return match holds(store, stream_id, *version).await {
                Ok(event_id) => Reply::Holds { event_id },
                Err(e) => Reply::Refused {
                    error: format!("{e:#}"),
                },
            }
        }
        Request::Stream {
            stream_id,
            from_version,
        } => republish_stream(store, js, config, stream_id, *from_version).await,
        Request::Range { after, through } => {
            republish(store, js, config, *after, Some(*through), Reason::Range).await
        }
    };
    match done {
        Ok(events) => {
            tracing::info!(?request, events, "repair sent");
            Reply::Republished { events }
        }
        Err(e) => {
            tracing::warn!(?request, error = format!("{e:#}"), "repair failed");
            Reply::Refused {
                error: format!("{e:#}"),
            }
        }
    }
}

async fn holds(
    store: &EventStore,
    stream_id: &str,
    version: i64,
) -> anyhow::Result<Option<uuid::Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT event_id FROM events WHERE stream_id = $1 AND stream_version = $2",
    )
    .bind(stream_id)
    .bind(version)
    .fetch_optional(store.pool())
    .await?)
}

async fn republish_stream(
    store: &EventStore,
    js: &jetstream::Context,
    config: &RelayConfig,
    stream_id: &str,
    from_version: i64,
) -> anyhow::Result<usize> {
    let events = store
        .read_stream(stream_id, from_version)
        .await
        .context("reading the stream")?;
    let sending = Sending::Again {
        generation: super::generation(),
        reason: Reason::Stream,
    };
    for page in events
        .chunks(PAGE as usize)
        .take(MAX_EVENTS / PAGE as usize)
    {
        publish(js, config, page, sending).await?;
    }
    Ok(events.len().min(MAX_EVENTS))
}

/// Sends the store's events after position `after` (up to `through`, or to the head) again,
/// as a repair marked `reason`: what a consumer short of a watermark asks for, and what an
/// operator runs for a broker replaced from scratch. Reads in position order without skipping
/// (like the relay), and gives how many were sent.
pub async fn republish(
    store: &EventStore,
    js: &jetstream::Context,
    config: &RelayConfig,
    after: i64,
    through: Option<i64>,
    reason: Reason,
) -> anyhow::Result<usize> {
    let sending = Sending::Again {
        generation: super::generation(),
        reason,
    };
    let (mut position, mut sent) = (after, 0);
    loop {
        let mut page = store.read_all(position, PAGE).await?;
        if let Some(through) = through {
            page.retain(|e| e.position <= through);
        }
        let Some(last) = page.last() else {
            return Ok(sent);
        };
        position = last.position;
        publish(js, config, &page, sending).await?;
        sent += page.len();
        if reason != Reason::Operator && sent >= MAX_EVENTS {
            return Ok(sent);
        }
        if reason == Reason::Operator {
            tracing::info!(position, sent, "republished");
        }
        tokio::task::yield_now().await;
    }
}

/// How long a consumer waits for the producer's answer to [`Request::Which`].
pub const WHICH_TIMEOUT: Duration = Duration::from_secs(2);
