//! The one typed configuration, read from flags or the environment: the shape both services
//! share (`service_kit::config`), with product-service's names and defaults, and its command
//! line: the shared commands and `asyncapi`.

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

/// Command line of the `product-service` binary: `product-service [serve]`, `replay`,
/// `republish` or `asyncapi`, with flags before or after the subcommand.
#[derive(Debug, clap::Parser)]
#[command(name = SERVICE_NAME, about = ProductService::ABOUT, version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<ProductServiceCommand>,
    #[command(flatten)]
    pub config: Config,
}

/// The shared commands, and the one that needs nothing but the binary.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ProductServiceCommand {
    #[command(flatten)]
    Shared(Command),
    /// Print the AsyncAPI document of the events this service publishes and consumes (what
    /// GET /asyncapi.json serves), for EVENTS_NAMESPACE and NATS_URL, and exit. Connects to
    /// nothing.
    Asyncapi,
}

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
        assert_eq!(
            cli.command,
            Some(ProductServiceCommand::Shared(Command::Serve))
        );
        assert_eq!(cli.config.nats_names().other_stream, "t1_order_events");
    }

    #[test]
    fn replay_takes_repeated_projections_or_list() {
        let cli = Cli::try_parse_from(["product-service", "replay", "--projection", "products"])
            .expect("parses");
        let Some(ProductServiceCommand::Shared(Command::Replay(args))) = cli.command else {
            panic!("not replay: {:?}", cli.command)
        };
        assert_eq!(args.projections, ["products"]);
        assert!(!args.list);
        let cli = Cli::try_parse_from(["product-service", "replay", "--list"]).expect("parses");
        assert!(matches!(
            cli.command,
            Some(ProductServiceCommand::Shared(Command::Replay(args))) if args.list
        ));
    }

    #[test]
    fn asyncapi_takes_the_namespace_before_or_after_it() {
        for args in [
            &["product-service", "asyncapi", "--events-namespace", "t1"][..],
            &["product-service", "--events-namespace", "t1", "asyncapi"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(cli.command, Some(ProductServiceCommand::Asyncapi));
            assert_eq!(cli.config.common.events_namespace, "t1");
        }
    }
}
