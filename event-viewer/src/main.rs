//! `event-viewer`: see lib.rs for the map. Configuration comes from the environment
//! (`event-viewer --help`).

use clap::Parser;
use event_viewer::{app::Application, config::Config};
use tracing_subscriber::EnvFilter;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| "info".into()))
        .init();
    let app = Application::build(config).await?;
    tracing::info!(port = app.port(), "event-viewer serving");
    app.run_until_stopped().await
}
