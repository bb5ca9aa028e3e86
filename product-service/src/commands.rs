//! Executing product commands: load the stream, decide, append with the loaded version, and
//! start over when another writer got there first.

use event_store::{EventStore, Metadata, NewEvent, StoreError};
use uuid::Uuid;

use crate::domain::commands::ProductCommand;
use crate::domain::error::DomainError;
use crate::domain::product::{self, ProductState};
use crate::domain::SCHEMA_VERSION;
use crate::streams::{load_products, save_snapshots, Loaded, SNAPSHOT_EVERY};

/// Attempts after the first when the append conflicts.
const CONFLICT_RETRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Still conflicting after every retry.
    #[error("{0}")]
    Conflict(StoreError),
    #[error(transparent)]
    Store(StoreError),
    /// The stream holds an event this code cannot read.
    #[error(transparent)]
    Corrupt(anyhow::Error),
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => CommandError::Conflict(e),
            other => CommandError::Store(other),
        }
    }
}

/// The product after a command, and the stream version that holds it.
pub type Outcome = Loaded<ProductState>;

#[derive(Clone)]
pub struct ProductCommands {
    store: EventStore,
}

impl ProductCommands {
    pub fn new(store: EventStore) -> Self {
        ProductCommands { store }
    }

    /// Runs `command` against product `product_id`. A command that changes nothing (the
    /// current price again) appends nothing and answers with the current version.
    #[tracing::instrument(skip_all, fields(product_id = %product_id))]
    pub async fn execute(
        &self,
        product_id: Uuid,
        command: ProductCommand,
        metadata: &Metadata,
    ) -> Result<Outcome, CommandError> {
        let stream_id = product::stream_id(product_id);
        let mut attempt = 0;
        loop {
            let (loaded, folded) = self.load(product_id).await?;
            let decided = product::decide(&loaded.state, command.clone())?;
            if decided.is_empty() {
                return Ok(loaded);
            }
            let new_events: Vec<NewEvent> = decided
                .iter()
                .map(|e| new_event(e.event_type(), e.payload(), metadata))
                .collect();
            match self
                .store
                .append(&stream_id, loaded.expected(), &new_events)
                .await
            {
                Ok(appended) => {
                    let state = decided.iter().fold(loaded.state, product::evolve);
                    let outcome = Loaded {
                        state,
                        version: appended.stream_version,
                    };
                    if folded + decided.len() >= SNAPSHOT_EVERY {
                        self.snapshot(product_id, &outcome).await;
                    }
                    return Ok(outcome);
                }
                Err(StoreError::Conflict { .. }) if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::debug!(attempt, "append conflicted; deciding again");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl ProductCommands {
    /// The product from its snapshot and the events after it, and how many those were.
    async fn load(&self, product_id: Uuid) -> Result<(Loaded<ProductState>, usize), CommandError> {
        let mut conn = self
            .store
            .pool()
            .acquire()
            .await
            .map_err(StoreError::from)?;
        let mut loaded = load_products(&mut conn, &[product_id]).await.map_err(|e| {
            match e.downcast::<sqlx::Error>() {
                Ok(e) => CommandError::Store(e.into()),
                Err(e) => CommandError::Corrupt(e),
            }
        })?;
        let product = loaded.remove(&product_id).ok_or_else(|| {
            CommandError::Corrupt(anyhow::anyhow!("product {product_id} was not loaded"))
        })?;
        Ok((product.loaded, product.folded))
    }

    /// Stores the product's state as of its new version. Only a cache: a failure is logged,
    /// and the next load folds a few more events.
    async fn snapshot(&self, product_id: Uuid, outcome: &Outcome) {
        let saved = async {
            let mut conn = self.store.pool().acquire().await?;
            save_snapshots(&mut conn, &[(product_id, &outcome.state, outcome.version)]).await
        };
        if let Err(e) = saved.await {
            tracing::warn!(error = format!("{e:#}"), "cannot save a product snapshot");
        }
    }
}

/// A domain event wrapped for the store, with a fresh time-ordered id.
pub fn new_event(event_type: &str, payload: serde_json::Value, metadata: &Metadata) -> NewEvent {
    NewEvent::new(event_type, payload)
        .with_schema_version(SCHEMA_VERSION)
        .with_metadata(metadata.clone())
}
