//! One typed configuration, read from the command line and the environment.

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};

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

#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ReplayArgs {
    /// A projection to rebuild; repeat for several. All of them when none is named.
    #[arg(long = "projection", value_name = "NAME")]
    pub projections: Vec<String>,
    /// Print the names of the projections and exit.
    #[arg(long)]
    pub list: bool,
    /// Events read and applied per page (each page is one short transaction).
    #[arg(long, default_value_t = event_store::replay::DEFAULT_PAGE_SIZE,
          value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub page_size: i64,
}

/// The token that opens `/admin/*`. Never printed: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: impl Into<String>) -> Self {
        AdminToken(token.into())
    }

    /// Whether `candidate` is the token, comparing in time independent of where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(hidden)")
    }
}

impl std::str::FromStr for AdminToken {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(AdminToken(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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
    #[arg(
        long,
        global = true,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
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
            nats_url: "nats://127.0.0.1:4222".to_owned(),
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
        self.admin_token.clone().filter(|t| !t.0.is_empty())
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
    fn the_admin_token_is_hidden_and_an_empty_one_disables_admin() {
        let token = AdminToken::new("s3cret");
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!format!("{token:?}").contains("s3cret"));
        let config = Config {
            admin_token: Some(AdminToken::new("")),
            ..Config::default()
        };
        assert_eq!(config.admin_token(), None);
    }
}
