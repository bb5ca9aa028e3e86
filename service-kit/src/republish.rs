//! Sending the store's events to the broker again, for a broker replaced from scratch (or
//! any loss an operator would rather not wait for the automatic repairs to find):
//! `<service> republish [--from-position N]` and `POST /admin/republish`. Events go out
//! under repair message ids, marked `Es-Republished: operator`; consumers' inboxes take each
//! once, however often it is sent.

use async_nats::jetstream;
use event_store::relay::RelayConfig;
use event_store::repair::{responder, Reason};
use event_store::{nats, EventStore};

use crate::config::{self, Config, RepublishArgs};

/// What sends a service's events again: its store, JetStream and its stream's names.
#[derive(Clone)]
pub struct Republisher {
    store: EventStore,
    js: jetstream::Context,
    config: RelayConfig,
}

impl Republisher {
    pub fn new(store: EventStore, js: jetstream::Context, config: RelayConfig) -> Self {
        Republisher { store, js, config }
    }

    /// Sends every event after `from_position` again; how many were sent.
    pub async fn run(&self, from_position: i64) -> anyhow::Result<usize> {
        self.config.declare_stream(&self.js).await?;
        responder::republish(
            &self.store,
            &self.js,
            &self.config,
            from_position,
            None,
            Reason::Operator,
        )
        .await
    }
}

/// `<service> republish`: connects to the service's database and NATS and sends its events
/// after `--from-position` again, beside a running service or not.
pub async fn command<S: config::Service>(
    config: &Config<S>,
    args: &RepublishArgs,
) -> anyhow::Result<()> {
    let common = &config.common;
    let pool = crate::database::connect(&config.database_url, 4).await?;
    let client = nats::connect(&common.nats_url, common.nats_login.login()?.as_ref()).await?;
    let names = config.nats_names();
    let republisher = Republisher::new(
        EventStore::new(pool.clone()),
        nats::jetstream(client.clone()),
        RelayConfig {
            producer: config.producer(),
            replicas: usize::from(common.nats_stream_replicas),
            ..RelayConfig::new(names.own_stream, names.own_subjects)
        },
    );
    let sent = republisher.run(args.from_position).await;
    client.flush().await.ok();
    pool.close().await;
    let sent = sent?;
    println!(
        "republished {sent} events after position {}",
        args.from_position
    );
    Ok(())
}
