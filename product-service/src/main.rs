use clap::Parser;
use product_service::config::{Cli, Command};
use product_service::{replay, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init(&cli.config.common.log_filter, cli.config.common.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = product_service::build(cli.config).await?;
            tracing::info!(port = app.port(), "product-service listening");
            app.run_until_stopped().await
        }
        Command::Replay(args) => replay::run(&cli.config, &args).await,
    }
}
