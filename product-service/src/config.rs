//! The one typed configuration, read from flags or the environment: the shape both services
//! share (`service_kit::config`), with product-service's names and defaults.

use service_kit::config::Service;
pub use service_kit::config::{
    AdminToken, Command, Common, EventNames, LogFormat, ReplayArgs, DEFAULT_READY_MAX_LAG_SECONDS,
};

/// The service's name: its durable consumer, dead-letter subject and metrics label.
pub const SERVICE_NAME: &str = "product-service";
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/products";
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8082";

/// product-service among the services.
#[derive(Debug, Clone)]
pub struct ProductService;

impl Service for ProductService {
    const NAME: &'static str = SERVICE_NAME;
    const ABOUT: &'static str = "Product catalogue and stock";
    const OWN_EVENTS: &'static str = "product";
    const OTHER_EVENTS: &'static str = "order";
    const DEFAULT_DATABASE_URL: &'static str = DEFAULT_DATABASE_URL;
    const DEFAULT_HTTP_ADDR: &'static str = DEFAULT_HTTP_ADDR;
    type Settings = service_kit::config::NoSettings;
}

/// The command line: `product-service [serve]` or `product-service replay`.
pub type Cli = service_kit::config::Cli<ProductService>;
pub type Config = service_kit::config::Config<ProductService>;
#[cfg(test)]
mod tests {
    use clap::Parser;

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
