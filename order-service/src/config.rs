//! The one typed configuration, read from flags or the environment: the shape both services
//! share (`service_kit::config`), with order-service's names and defaults, its own setting
//! (where product-service is, for the audit) and its own commands (`audit`, `asyncapi`).

use service_kit::config::Service;
pub use service_kit::config::{
    AdminToken, Command, Common, EventNames, LogFormat, ReplayArgs, DEFAULT_READY_MAX_LAG_SECONDS,
};

/// The service's name: its durable consumer, dead-letter subject and metrics label.
pub const SERVICE_NAME: &str = "order-service";
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/orders";
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8081";
/// product-service as docker-compose.yml names it.
pub const DEFAULT_PRODUCT_SERVICE_URL: &str = "http://product-service:8082";

/// order-service among the services.
#[derive(Debug, Clone)]
pub struct OrderService;

impl Service for OrderService {
    const NAME: &'static str = SERVICE_NAME;
    const ABOUT: &'static str = "Orders and the order side of the saga";
    const OWN_EVENTS: &'static str = "order";
    const OTHER_EVENTS: &'static str = "product";
    const DEFAULT_DATABASE_URL: &'static str = DEFAULT_DATABASE_URL;
    const DEFAULT_HTTP_ADDR: &'static str = DEFAULT_HTTP_ADDR;
    type Settings = Settings;
}

/// What only order-service is configured with.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Settings {
    /// Base URL of product-service's HTTP API, the source of truth the audit compares the
    /// catalogue with (`order-service audit`, `GET /admin/audit`).
    #[arg(long, env = "PRODUCT_SERVICE_URL", global = true,
          default_value = DEFAULT_PRODUCT_SERVICE_URL)]
    pub product_service_url: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            product_service_url: DEFAULT_PRODUCT_SERVICE_URL.to_owned(),
        }
    }
}

/// Command line of the `order-service` binary: `order-service [serve]`, `replay`,
/// `republish`, `audit` or `asyncapi`, with flags before or after the subcommand.
#[derive(Debug, clap::Parser)]
#[command(name = SERVICE_NAME, about = OrderService::ABOUT, version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<OrderCommand>,
    #[command(flatten)]
    pub config: Config,
}

/// The shared commands, and order-service's own.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum OrderCommand {
    #[command(flatten)]
    Shared(Command),
    /// Compare every product of the catalogue with product-service's own record (at
    /// PRODUCT_SERVICE_URL) and print the share that agrees (C) and each disagreement. Exits
    /// 0 when C = 1, 1 when they disagree, 2 when the audit could not run. Needs
    /// DATABASE_URL and PRODUCT_SERVICE_URL.
    Audit,
    /// Print the AsyncAPI document of the events this service publishes and consumes (what
    /// GET /asyncapi.json serves), for EVENTS_NAMESPACE and NATS_URL, and exit. Connects to
    /// nothing.
    Asyncapi,
}

pub type Config = service_kit::config::Config<OrderService>;
#[cfg(test)]
mod tests {
    use clap::Parser;
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn defaults_hold_without_flags_or_variables() {
        let cli = Cli::try_parse_from(["order-service"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(cli.command.is_none());
        if std::env::var_os("PRODUCT_SERVICE_URL").is_none() {
            assert_eq!(cli.config.settings, Settings::default());
        }
        // The environment of the test run may set some variables; compare only what it does not.
        if std::env::var_os("HTTP_ADDR").is_none() {
            assert_eq!(cli.config.http_addr, Config::defaults().http_addr);
        }
    }

    #[test]
    fn flags_work_before_and_after_the_subcommand() {
        for args in [
            &["order-service", "--events-namespace", "t1", "serve"][..],
            &["order-service", "serve", "--events-namespace", "t1"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{e}"));
            assert!(matches!(
                cli.command,
                Some(OrderCommand::Shared(Command::Serve))
            ));
            assert_eq!(cli.config.common.events_namespace, "t1");
        }
    }

    #[test]
    fn replay_takes_repeated_projections_and_list() {
        let cli = Cli::try_parse_from([
            "order-service",
            "replay",
            "--projection",
            "orders",
            "--projection",
            "catalog",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let Some(OrderCommand::Shared(Command::Replay(args))) = cli.command else {
            panic!("not replay: {:?}", cli.command)
        };
        assert_eq!(args.projections, ["orders", "catalog"]);
        assert!(!args.list);
        let cli = Cli::try_parse_from(["order-service", "replay", "--list"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(cli.command, Some(OrderCommand::Shared(Command::Replay(args))) if args.list)
        );
    }

    #[test]
    fn audit_takes_the_product_service_url_before_or_after_it() {
        for args in [
            &[
                "order-service",
                "audit",
                "--product-service-url",
                "http://p:1",
            ][..],
            &[
                "order-service",
                "--product-service-url",
                "http://p:1",
                "audit",
            ][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(cli.command, Some(OrderCommand::Audit));
            assert_eq!(cli.config.settings.product_service_url, "http://p:1");
        }
    }

    #[test]
    fn asyncapi_takes_the_namespace_before_or_after_it() {
        for args in [
            &["order-service", "asyncapi", "--events-namespace", "t1"][..],
            &["order-service", "--events-namespace", "t1", "asyncapi"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(cli.command, Some(OrderCommand::Asyncapi));
            assert_eq!(cli.config.common.events_namespace, "t1");
        }
    }

    #[test]
    fn the_default_address_parses() {
        let parsed: SocketAddr = DEFAULT_HTTP_ADDR.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, Config::defaults().http_addr);
    }

    #[test]
    fn nats_names_derive_from_the_namespace() {
        let names = Config::defaults().nats_names();
        assert_eq!(names.own_stream, "shop_order_events");
        assert_eq!(names.own_subjects, "shop.order.events");
        assert_eq!(names.other_stream, "shop_product_events");
        assert_eq!(names.other_subjects, "shop.product.events");
        assert_eq!(names.durable, "order-service");
        assert_eq!(names.dead_letter_subject, "shop.deadletter.order-service");
    }
}
