//! The `order-service` binary: `order-service [serve]`, `replay`, `republish`, `audit` or
//! `asyncapi`, configured from flags and the environment.

use std::process::ExitCode;

use clap::Parser;
use order_service::config::{Cli, OrderCommand};
use order_service::{api, app, audit, replay};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let Cli { command, config } = Cli::parse();
    let command = match command {
        Some(OrderCommand::Audit) => return Ok(audit::command(&config).await),
        Some(OrderCommand::Asyncapi) => {
            service_kit::asyncapi::print(&api::asyncapi::document(&config)?)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(OrderCommand::Shared(command)) => Some(command),
        None => None,
    };
    let cli = service_kit::config::Cli { command, config };
    service_kit::service::main(cli, order_service::build, replay::targets, app::migrations).await?;
    Ok(ExitCode::SUCCESS)
}
