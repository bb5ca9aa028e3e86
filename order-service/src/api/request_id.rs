//! Request ids and trace context (`X-Request-Id`, `traceparent`): stored as the correlation id
//! and trace context of every event a request writes, echoed in the response, carried by the
//! request's log span. One implementation for both services, in the `service-kit` crate.

pub use service_kit::request::{middleware, RequestContext, REQUEST_ID_HEADER};
