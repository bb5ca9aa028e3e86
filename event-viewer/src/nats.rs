//! The viewer's NATS side. It only reads: one ephemeral ordered consumer per service stream
//! (no acks, nothing a service depends on), starting near the end of the stream; a plain
//! subscription to the dead-letter subjects; and the services' durable consumers' info for
//! their lag. While NATS is down the page says so; when the client reconnects each ordered
//! consumer is recreated from the sequence after the last one seen, so nothing in between is
//! missed and nothing is shown twice.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use async_nats::{ConnectOptions, Event};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ServiceNames};
use crate::event::{self, RawMessage};
use crate::hub::{DeadLetter, Hub};
use crate::window::CAPACITY;

/// Pause before retrying after an error (NATS down, stream not created yet).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Connects (in the background: NATS may be down at start) and spawns the watchers.
pub async fn start(
    config: &Config,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> anyhow::Result<async_nats::Client> {
    // Bumped at every (re)connection: a signal for the ordered consumers to start afresh.
    let (connections, _) = watch::channel(0u64);
    let connections = Arc::new(connections);
    let on_event = {
        let hub = hub.clone();
        let connections = connections.clone();
        move |event: Event| {
            match event {
                Event::Connected => {
                    hub.set_nats(true);
                    connections.send_modify(|n| *n += 1);
                }
                Event::Disconnected | Event::Closed => hub.set_nats(false),
                Event::ClientError(e) => hub.set_nats_error(e.to_string()),
                other => tracing::debug!(event = %other, "NATS"),
            }
            async {}
        }
    };
    let mut options = ConnectOptions::new()
        .name("event-viewer")
        .retry_on_initial_connect()
        .event_callback(on_event);
    if let Some((user, password)) = config.nats_credentials() {
        options = options.user_and_password(user, password);
    }
    let client = options
        .connect(config.nats_url.as_slice())
        .await
        .with_context(|| format!("NATS at {}", config.nats_urls()))?;
    for names in config.services() {
        let follower = Follower {
            js: jetstream::new(client.clone()),
            names,
            hub: hub.clone(),
            next: None,
        };
        tokio::spawn(follower.run(connections.subscribe(), shutdown.clone()));
    }
    tokio::spawn(dead_letters(
        client.clone(),
        config.dead_letter_subjects(),
        hub,
        shutdown,
    ));
    Ok(client)
}

/// Follows one service's stream with an ordered consumer.
struct Follower {
    js: jetstream::Context,
    names: ServiceNames,
    hub: Arc<Hub>,
    /// The stream sequence to start from when the consumer is (re)created.
    next: Option<u64>,
}

impl Follower {
    async fn run(mut self, mut connections: watch::Receiver<u64>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                result = self.follow(&mut connections) => match result {
                    Ok(()) => tracing::info!(stream = %self.names.stream, "NATS (re)connected: recreating the ordered consumer"),
                    Err(e) => {
                        tracing::warn!(stream = %self.names.stream, error = format!("{e:#}"), "cannot follow the stream; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(RETRY_AFTER) => {}
                        }
                    }
                }
            }
        }
    }

    /// Reads until an error, or until the client reconnects (`Ok`).
    async fn follow(&mut self, connections: &mut watch::Receiver<u64>) -> anyhow::Result<()> {
        drop(connections.borrow_and_update());
        let mut stream = self
            .js
            .get_stream(&self.names.stream)
            .await
            .context("stream")?;
        let last = stream
            .info()
            .await
            .context("stream info")?
            .state
            .last_sequence;
        let start = start_sequence(self.next, last);
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: format!("{}.>", self.names.subject_prefix),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ..OrderedConfig::default()
            })
            .await
            .context("ordered consumer")?;
        let mut messages = consumer.messages().await.context("messages")?;
        tracing::info!(stream = %self.names.stream, start, "following");
        loop {
            let message = tokio::select! {
                changed = connections.changed() => {
                    changed.context("the NATS client is gone")?;
                    return Ok(());
                }
                message = messages.next() => message,
            };
            let message = message.context("the ordered consumer ended")??;
            let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            let seq = info.stream_sequence;
            let time_ms = i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000)
                .unwrap_or_default();
            self.next = Some(seq + 1);
            self.hub.add_event(event::decode(&RawMessage {
                service: self.names.service,
                subject_prefix: &self.names.subject_prefix,
                subject: message.message.subject.as_str(),
                headers: message.message.headers.as_ref(),
                payload: &message.message.payload,
                seq,
                time_ms,
            }));
        }
    }
}

/// Dead letters as the services publish them (plain NATS; the client resubscribes itself
/// after a reconnection).
async fn dead_letters(
    client: async_nats::Client,
    subject: String,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    loop {
        match client.subscribe(subject.clone()).await {
            Ok(mut subscriber) => loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    message = subscriber.next() => message,
                };
                let Some(message) = message else { break };
                let header = |name: &str| {
                    message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .map(|v| v.as_str().to_owned())
                };
                hub.add_dead_letter(DeadLetter {
                    subject: message.subject.to_string(),
                    consumer: header("Es-Dead-Letter-Consumer"),
                    kind: header("Es-Dead-Letter-Kind"),
                    error: header("Es-Dead-Letter-Error"),
                    time_ms: now_ms(),
                });
            },
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to dead letters; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY_AFTER) => {}
        }
    }
}

/// Messages the durable consumer `durable` on `stream` has not acknowledged yet.
pub async fn consumer_lag(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
) -> anyhow::Result<u64> {
    let stream = js.get_stream(stream).await?;
    let info = stream.consumer_info(durable).await?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}

/// Where a (re)created consumer starts: after the last message seen, or, the first time and
/// when the stream is behind what was seen (its store was lost and it began again), at the
/// last [`CAPACITY`] messages.
fn start_sequence(next: Option<u64>, last: u64) -> u64 {
    match next {
        Some(next) if next <= last.saturating_add(1) => next,
        _ => last.saturating_sub(CAPACITY as u64 - 1).max(1),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_starts_near_the_end_then_after_the_last_message_seen() {
        assert_eq!(start_sequence(None, 0), 1);
        assert_eq!(start_sequence(None, 50), 1);
        assert_eq!(start_sequence(None, 25_000), 25_000 - CAPACITY as u64 + 1);
        assert_eq!(start_sequence(Some(41), 40), 41);
        assert_eq!(start_sequence(Some(30), 40), 30);
        // The stream started again from 1 (a new store): show its latest messages.
        assert_eq!(start_sequence(Some(900), 12), 1);
    }
}
