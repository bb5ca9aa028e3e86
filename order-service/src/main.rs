//! The `order-service` binary: `order-service [serve]` or `order-service replay`, configured
//! from the environment.

use clap::Parser;
use order_service::config::{Cli, Command};
use order_service::{replay, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init(&cli.config.common.log_filter, cli.config.common.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = order_service::build(cli.config).await?;
            tracing::info!(port = app.port(), "serving");
            app.run_until_stopped().await
        }
        Command::Replay(args) => replay::run(&cli.config, &args).await,
    }
}
