//! The JetStream consumer against a real Postgres and the shared NATS server: messages are
//! published by hand, as the other service's relay would, and handled by a test reaction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batches;
mod fixture;
mod messages;
mod upgrade;
