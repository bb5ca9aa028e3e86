//! Logging (and, with the `otel` feature, span export): the shared setup of the
//! `service-kit` crate, with this service's name and configured format.

use service_kit::logging::Telemetry;

use crate::config::{LogFormat, SERVICE_NAME};

/// Installs the global subscriber; keep the result until exit (it flushes exported spans). A
/// second call (tests build many applications in one process) leaves the first in place.
pub fn init(filter: &str, format: LogFormat) -> Telemetry {
    service_kit::logging::init(SERVICE_NAME, filter, format == LogFormat::Json)
}
