//! Logging: one subscriber for the process, text for people or JSON for collectors.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. A second call (tests build many applications in one
/// process) leaves the first in place.
pub fn init(filter: &str, format: LogFormat) {
    let (env_filter, invalid) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Some(error) = invalid {
        tracing::warn!(filter, %error, "RUST_LOG is not a valid filter; logging at info");
    }
}
