//! The `product-service` binary: `product-service [serve]` or `product-service replay`, configured
//! from flags and the environment.

use clap::Parser;
use product_service::config::Cli;
use product_service::{app, replay};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::service::main(
        Cli::parse(),
        product_service::build,
        replay::targets,
        app::migrations,
    )
    .await
}
