//! The one typed configuration, read from flags or the environment. What both services share
//! is `service_kit::config::Common`; here only what differs. Defaults match
//! docker-compose.yml and a local Postgres and NATS.

use std::net::SocketAddr;

use clap::Parser;
pub use service_kit::config::{
    AdminToken, Command, Common, EventNames, LogFormat, ReplayArgs, DEFAULT_READY_MAX_LAG_SECONDS,
};

/// The service's name: its durable consumer, dead-letter subject and metrics label.
pub const SERVICE_NAME: &str = "product-service";
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/products";
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8082";

/// The command line: `product-service [serve]` or `product-service replay`.
#[derive(Debug, Parser)]
#[command(
    name = "product-service",
    version,
    about = "Product catalogue and stock"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Postgres database of this service; created at start if it does not exist.
    #[arg(long, env = "DATABASE_URL", global = true, default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Where the HTTP server listens; port 0 picks a free port.
    #[arg(long, env = "HTTP_ADDR", global = true, default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,
    #[command(flatten)]
    pub common: Common,
}

impl Config {
    /// The defaults, as if no flag and no variable were set.
    pub fn defaults() -> Self {
        Config {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8082)),
            common: Common::default(),
        }
    }

    /// The JetStream names derived from the namespace.
    pub fn nats_names(&self) -> EventNames {
        EventNames::new(
            &self.common.events_namespace,
            SERVICE_NAME,
            "product",
            "order",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_serve_and_flags_may_follow_the_subcommand() {
        let cli = Cli::try_parse_from(["product-service"]).expect("parses");
        assert_eq!(cli.command, None);
        assert_eq!(Config::defaults().http_addr.port(), 8082);
        let cli = Cli::try_parse_from(["product-service", "serve", "--events-namespace", "t1"])
            .expect("parses");
        assert_eq!(cli.command, Some(Command::Serve));
        assert_eq!(cli.config.nats_names().other_stream, "t1_order_events");
    }

    #[test]
    fn replay_takes_repeated_projections_or_list() {
        let cli = Cli::try_parse_from(["product-service", "replay", "--projection", "products"])
            .expect("parses");
        let Some(Command::Replay(args)) = cli.command else {
            panic!("not replay: {:?}", cli.command)
        };
        assert_eq!(args.projections, ["products"]);
        assert!(!args.list);
        let cli = Cli::try_parse_from(["product-service", "replay", "--list"]).expect("parses");
        assert!(matches!(cli.command, Some(Command::Replay(args)) if args.list));
    }

    #[test]
    fn an_empty_admin_token_disables_admin_and_a_set_one_is_kept() {
        let cli = Cli::try_parse_from(["product-service", "--admin-token", ""])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.config.common.admin_token(), None);
        let cli = Cli::try_parse_from(["product-service", "--admin-token", "s3cret"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(cli
            .config
            .common
            .admin_token()
            .is_some_and(|t| t.matches("s3cret")));
    }
}
