//! The `order-service` binary: `order-service [serve]` or `order-service replay`, configured
//! from flags and the environment.

use clap::Parser;
use order_service::config::Cli;
use order_service::{app, replay};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::service::main(
        Cli::parse(),
        order_service::build,
        replay::targets,
        app::migrations,
    )
    .await
}
