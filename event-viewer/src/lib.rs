//! event-viewer: a read-only observer of both services, serving one live page.
//!
//! Data flows one way, from the wire to the page:
//! - [`nats`]: an ephemeral ordered consumer per service stream (nothing acknowledged, so no
//!   service notices it) and the dead-letter subjects -> [`event::decode`] -> the [`hub`];
//! - [`scrape`]: each service's `/metrics`, read by [`prom`], and its durable consumer's lag
//!   from JetStream -> the [`hub`], once a second;
//! - [`cluster`]: every 2 s, each `NATS_URL` node probed and the service streams' cluster
//!   info (leader, replicas) -> the [`hub`];
//! - [`hub`]: the bounded [`window`] of events (deduplicated, time-ordered), recent dead
//!   letters and each dependency's status; it broadcasts every change;
//! - [`http`]: the page (assets/, embedded), `GET /api/events`, `GET /api/saga/{id}` (built
//!   by [`saga`] from the window), `GET /api/cluster`, `GET /api/stream` (server-sent
//!   events), and the forms' POSTs forwarded to the services.
//!
//! [`config`] reads the environment; [`app`] wires it together.

pub mod app;
pub mod cluster;
pub mod config;
pub mod event;
pub mod http;
pub mod hub;
pub mod nats;
pub mod prom;
pub mod saga;
pub mod scrape;
pub mod window;
