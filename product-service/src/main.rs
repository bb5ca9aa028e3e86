//! The `product-service` binary: `product-service [serve]`, `replay`, `republish` or
//! `asyncapi`, configured from flags and the environment.

use clap::Parser;
use product_service::config::{Cli, ProductServiceCommand};
use product_service::{api, app, replay};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command, config } = Cli::parse();
    let command = match command {
        Some(ProductServiceCommand::Asyncapi) => {
            return service_kit::asyncapi::print(&api::asyncapi::document(&config)?)
        }
        Some(ProductServiceCommand::Shared(command)) => Some(command),
        None => None,
    };
    let cli = service_kit::config::Cli { command, config };
    service_kit::service::main(
        cli,
        product_service::build,
        replay::targets,
        app::migrations,
    )
    .await
}
