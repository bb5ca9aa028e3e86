//! What both services share at their HTTP edge; each wires it in its `app` and `main`.
//!
//! - [`request`]: the HTTP middleware: a request id (`X-Request-Id`, or a new one) and the W3C
//!   `traceparent` become the [`request::RequestContext`] whose metadata every event the request
//!   writes carries; the request runs in a span naming the id, is logged, and is timed into
//!   `http_request_duration_seconds` by route pattern.
//! - [`idempotency`]: `Idempotency-Key` on every `POST`: the key claimed before the handler,
//!   the response kept in the command's append transaction and replayed for a retry.
//! - [`prometheus`]: the process's recorder and `GET /metrics`, which adds the store's lag
//!   gauges measured at scrape time (`event_store::metrics`).
//! - [`logging`]: the tracing subscriber (text or JSON), and with the `otel` feature an OTLP
//!   span exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - [`whole_number`]: JSON integers as the OpenAPI documents define them (`5.0` is 5).
//! - [`error`]: the `{ error, message }` body both APIs answer with, the errors of the routes
//!   here, and `resource`, whose unrouted methods answer 405 in that format.
//! - [`service`]: the skeleton of a service: database, store, NATS, the relay and consumer,
//!   the HTTP server with the shared routes, and graceful stop; [`tasks`] is the policy its
//!   background tasks run under (bounded drain, a panic named by readiness and stopping the
//!   service), [`database`] creates, pools and migrates the database, [`health`] answers
//!   liveness and readiness.
//! - [`config`]: the configuration both services share (the `serve`/`replay` commands, the
//!   settings with common defaults, the JetStream names of each service).
//! - [`fresh`]: `?min_version=`, read-your-writes against a read model.
//! - [`replay_cli`]: the `replay` command's terminal side: the list of projections, a progress
//!   bar on a terminal (plain lines elsewhere) and a summary per projection.
//! - [`republish`]: sending the store's events to the broker again (`republish` command and
//!   `POST /admin/republish`), for a broker replaced from scratch.
//! - [`asyncapi`]: the AsyncAPI 3.0 document of a service's events (`GET /asyncapi.json`, the
//!   `asyncapi` command), built from the utoipa schemas of the types that write and read each
//!   schema version, with the CloudEvents names of `event_store::cloudevents`.
//! - [`admin`]: `/admin/projections`, projection status and online rebuilds behind the admin
//!   token, with its own state (the service's `event_store::replay::Rebuilds`).
//!
//! Correlation: request id -> event metadata `correlation_id` -> NATS headers (the relay) ->
//! the consumer's span and the metadata of the events a reaction appends -> and so on down
//! the saga.

pub mod admin;
pub mod asyncapi;
pub mod config;
pub mod database;
pub mod error;
pub mod fresh;
pub mod health;
pub mod idempotency;
pub mod logging;
pub mod prometheus;
pub mod replay_cli;
pub mod republish;
pub mod request;
pub mod service;
pub mod tasks;
pub mod whole_number;
