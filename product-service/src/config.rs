//! One typed configuration, read from the command line and the environment.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
pub use service_kit::config::{AdminToken, LogFormat, NatsLoginArgs, ReplayArgs};

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

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve HTTP and run the relay, projections and reactions (the default).
    Serve,
    /// Rebuild projections from the events in this service's database, while the service may
    /// keep running. Needs only DATABASE_URL.
    Replay(ReplayArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Postgres database of this service; created at start if missing.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/products"
    )]
    pub database_url: String,
    /// Connections in the service's Postgres pool (HTTP requests, the consumer's batches, the
    /// relay's reads); the relay's and projectors' leadership locks use one more each.
    #[arg(long, global = true, env = "DATABASE_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE)]
    pub database_pool_size: u32,
    #[arg(
        long,
        global = true,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    #[command(flatten)]
    pub nats_login: NatsLoginArgs,
    /// Where the HTTP server listens; port 0 picks a free port.
    #[arg(long, global = true, env = "HTTP_ADDR", default_value = "0.0.0.0:8082")]
    pub http_addr: SocketAddr,
    /// Prefix of every NATS stream and subject, so several deployments can share a server.
    #[arg(long, global = true, env = "EVENTS_NAMESPACE", default_value = "shop")]
    pub events_namespace: String,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Bearer token for `/admin/*` (projection rebuilds). Unset or empty: the admin routes
    /// do not exist (404).
    #[arg(long, global = true, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<AdminToken>,

    /// `/health/ready` answers 503 when the relay or a projector has left an event
    /// unprocessed for longer than this many seconds (0: never for lag).
    #[arg(long, env = "READY_MAX_LAG_SECONDS", global = true, default_value_t = DEFAULT_READY_MAX_LAG_SECONDS)]
    pub ready_max_lag_seconds: u64,
}

impl Default for Config {
    /// The documented defaults, ignoring the environment.
    fn default() -> Self {
        Config {
            database_url: "postgres://postgres@127.0.0.1:5432/products".to_owned(),
            database_pool_size: DEFAULT_POOL_SIZE,
            nats_url: "nats://127.0.0.1:4222".to_owned(),
            nats_login: NatsLoginArgs::default(),
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8082)),
            events_namespace: "shop".to_owned(),
            log_filter: "info".to_owned(),
            log_format: LogFormat::Text,
            admin_token: None,
            ready_max_lag_seconds: DEFAULT_READY_MAX_LAG_SECONDS,
        }
    }
}

pub const DEFAULT_READY_MAX_LAG_SECONDS: u64 = 30;
pub const DEFAULT_POOL_SIZE: u32 = 20;

/// The durable consumer name, also the inbox's and the dead-letter subject's suffix.
pub const SERVICE_NAME: &str = "product-service";

/// NATS names derived from the namespace `ns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsNames {
    /// This service's stream and subject prefix (published by the relay).
    pub own_stream: String,
    pub own_prefix: String,
    /// order-service's stream and subject prefix (consumed).
    pub order_stream: String,
    pub order_prefix: String,
    pub durable: String,
    pub dead_letter_subject: String,
}

impl Config {
    /// The admin token, if one is configured (an empty one counts as none).
    pub fn admin_token(&self) -> Option<AdminToken> {
        AdminToken::configured(self.admin_token.as_ref())
    }

    /// How old an unprocessed event may get before readiness fails; `None`: no limit.
    pub fn ready_max_lag(&self) -> Option<std::time::Duration> {
        (self.ready_max_lag_seconds > 0)
            .then(|| std::time::Duration::from_secs(self.ready_max_lag_seconds))
    }

    pub fn nats_names(&self) -> NatsNames {
        let ns = &self.events_namespace;
        NatsNames {
            own_stream: format!("{ns}_product_events"),
            own_prefix: format!("{ns}.product.events"),
            order_stream: format!("{ns}_order_events"),
            order_prefix: format!("{ns}.order.events"),
            durable: SERVICE_NAME.to_owned(),
            dead_letter_subject: format!("{ns}.deadletter.{SERVICE_NAME}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_serve_and_flags_may_follow_the_subcommand() {
        let cli = Cli::try_parse_from(["product-service"]).expect("parses");
        assert_eq!(cli.command, None);
        assert_eq!(Config::default().http_addr.port(), 8082);
        let cli = Cli::try_parse_from(["product-service", "serve", "--events-namespace", "t1"])
            .expect("parses");
        assert_eq!(cli.command, Some(Command::Serve));
        assert_eq!(cli.config.nats_names().order_stream, "t1_order_events");
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
        assert_eq!(cli.config.admin_token(), None);
        let cli = Cli::try_parse_from(["product-service", "--admin-token", "s3cret"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(cli
            .config
            .admin_token()
            .is_some_and(|t| t.matches("s3cret")));
    }
}
