//! The one typed configuration, read from flags or the environment. Defaults match
//! docker-compose.yml and a local Postgres and NATS.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
pub use service_kit::config::{AdminToken, LogFormat, NatsLoginArgs, ReplayArgs};

/// Command line of the `order-service` binary.
#[derive(Debug, Parser)]
#[command(
    name = "order-service",
    version,
    about = "Orders and the order side of the saga"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve HTTP and run the relay, projector and consumer (the default).
    Serve,
    /// Rebuild projections from the events in this service's database (own events from the
    /// store, product-service's from the inbox), while the service may keep running. Needs
    /// only DATABASE_URL.
    Replay(ReplayArgs),
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/orders";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_HTTP_ADDR: &str = "0.0.0.0:8081";
pub const DEFAULT_NAMESPACE: &str = "shop";
pub const DEFAULT_LOG_FILTER: &str = "info";
pub const DEFAULT_READY_MAX_LAG_SECONDS: u64 = 30;
pub const DEFAULT_POOL_SIZE: u32 = 20;

#[derive(Debug, Clone, Parser)]
pub struct Config {
    /// Postgres database of this service; created at start if it does not exist.
    #[arg(long, env = "DATABASE_URL", global = true, default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Connections in the service's Postgres pool (HTTP requests, the consumer's batches, the
    /// relay's reads); the relay's and projectors' leadership locks use one more each.
    #[arg(long, env = "DATABASE_POOL_SIZE", global = true, default_value_t = DEFAULT_POOL_SIZE)]
    pub database_pool_size: u32,

    #[arg(long, env = "NATS_URL", global = true, default_value = DEFAULT_NATS_URL)]
    pub nats_url: String,
    #[command(flatten)]
    pub nats_login: NatsLoginArgs,

    #[arg(long, env = "HTTP_ADDR", global = true, default_value = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,

    /// Prefix of every JetStream stream and subject, so several deployments (or tests) can
    /// share one NATS server.
    #[arg(long, env = "EVENTS_NAMESPACE", global = true, default_value = DEFAULT_NAMESPACE)]
    pub events_namespace: String,

    /// Log filter in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long = "log", env = "RUST_LOG", global = true, default_value = DEFAULT_LOG_FILTER)]
    pub log_filter: String,

    #[arg(long, env = "LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Bearer token for `/admin/*` (projection rebuilds). Unset or empty: the admin routes
    /// do not exist (404).
    #[arg(long, env = "ADMIN_TOKEN", global = true, hide_env_values = true)]
    pub admin_token: Option<AdminToken>,

    /// `/health/ready` answers 503 when the relay or a projector has left an event
    /// unprocessed for longer than this many seconds (0: never for lag).
    #[arg(long, env = "READY_MAX_LAG_SECONDS", global = true, default_value_t = DEFAULT_READY_MAX_LAG_SECONDS)]
    pub ready_max_lag_seconds: u64,
}

impl Config {
    /// The defaults, as if no flag and no variable were set.
    pub fn defaults() -> Self {
        Config {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            database_pool_size: DEFAULT_POOL_SIZE,
            nats_url: DEFAULT_NATS_URL.to_owned(),
            nats_login: NatsLoginArgs::default(),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
            events_namespace: DEFAULT_NAMESPACE.to_owned(),
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            log_format: LogFormat::Text,
            admin_token: None,
            ready_max_lag_seconds: DEFAULT_READY_MAX_LAG_SECONDS,
        }
    }

    /// The admin token, if one is configured (an empty one counts as none).
    pub fn admin_token(&self) -> Option<AdminToken> {
        AdminToken::configured(self.admin_token.as_ref())
    }

    /// How old an unprocessed event may get before readiness fails; `None`: no limit.
    pub fn ready_max_lag(&self) -> Option<std::time::Duration> {
        (self.ready_max_lag_seconds > 0)
            .then(|| std::time::Duration::from_secs(self.ready_max_lag_seconds))
    }

    /// The NATS names derived from the namespace.
    pub fn nats_names(&self) -> NatsNames {
        NatsNames::new(&self.events_namespace)
    }
}

/// JetStream streams, subject prefixes and consumer names of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsNames {
    /// The stream this service publishes its events to.
    pub order_stream: String,
    pub order_subjects: String,
    /// product-service's stream, consumed here.
    pub product_stream: String,
    pub product_subjects: String,
    /// The durable consumer on `product_stream`.
    pub durable: String,
    pub dead_letter_subject: String,
}

/// The service's name, used as its durable consumer name.
pub const SERVICE_NAME: &str = "order-service";

impl NatsNames {
    pub fn new(ns: &str) -> Self {
        NatsNames {
            order_stream: format!("{ns}_order_events"),
            order_subjects: format!("{ns}.order.events"),
            product_stream: format!("{ns}_product_events"),
            product_subjects: format!("{ns}.product.events"),
            durable: SERVICE_NAME.to_owned(),
            dead_letter_subject: format!("{ns}.deadletter.{SERVICE_NAME}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_hold_without_flags_or_variables() {
        let cli = Cli::try_parse_from(["order-service"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(cli.command.is_none());
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
            assert!(matches!(cli.command, Some(Command::Serve)));
            assert_eq!(cli.config.events_namespace, "t1");
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
        let Some(Command::Replay(args)) = cli.command else {
            panic!("not replay: {:?}", cli.command)
        };
        assert_eq!(args.projections, ["orders", "catalog"]);
        assert!(!args.list);
        let cli = Cli::try_parse_from(["order-service", "replay", "--list"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cli.command, Some(Command::Replay(args)) if args.list));
    }

    #[test]
    fn an_empty_admin_token_disables_admin_and_a_set_one_is_kept() {
        let cli = Cli::try_parse_from(["order-service", "--admin-token", ""])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.config.admin_token(), None);
        let cli = Cli::try_parse_from(["order-service", "--admin-token", "s3cret"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(cli
            .config
            .admin_token()
            .is_some_and(|t| t.matches("s3cret")));
    }

    #[test]
    fn the_readiness_lag_limit_defaults_to_30_seconds_and_0_turns_it_off() {
        assert_eq!(
            Config::defaults().ready_max_lag(),
            Some(std::time::Duration::from_secs(30))
        );
        let cli = Cli::try_parse_from(["order-service", "--ready-max-lag-seconds", "0"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.config.ready_max_lag(), None);
    }

    #[test]
    fn the_default_address_parses() {
        let parsed: SocketAddr = DEFAULT_HTTP_ADDR.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, Config::defaults().http_addr);
    }

    #[test]
    fn nats_names_derive_from_the_namespace() {
        let names = NatsNames::new("shop");
        assert_eq!(names.order_stream, "shop_order_events");
        assert_eq!(names.order_subjects, "shop.order.events");
        assert_eq!(names.product_stream, "shop_product_events");
        assert_eq!(names.product_subjects, "shop.product.events");
        assert_eq!(names.durable, "order-service");
        assert_eq!(names.dead_letter_subject, "shop.deadletter.order-service");
    }
}
