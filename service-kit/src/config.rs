//! The configuration both services share: the `serve` and `replay` commands, and every
//! setting whose default is the same for both ([`Common`]). Each service's `Config` adds only
//! what differs (its database and its port) and flattens [`Common`] in.

use std::time::Duration;

use event_store::envelope::Producer;

/// What tells the two services apart in their configuration: names and defaults.
pub trait Service: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The binary's name: its durable consumer, dead-letter subject and metrics label.
    const NAME: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// Whose events it writes and whose it consumes, as named in subjects (`order`).
    const OWN_EVENTS: &'static str;
    const OTHER_EVENTS: &'static str;
    const DEFAULT_DATABASE_URL: &'static str;
    const DEFAULT_HTTP_ADDR: &'static str;
    /// Settings only this service has, flattened into its [`Config`] ([`NoSettings`] for none).
    type Settings: clap::Args + Clone + std::fmt::Debug + Default + Send + Sync + 'static;
}

/// The [`Service::Settings`] of a service that has none of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct NoSettings {}

/// The command line of a service: `<service> [serve]` or `<service> replay`, with flags
/// before or after the subcommand.
#[derive(Debug, clap::Parser)]
#[command(name = S::NAME, about = S::ABOUT, version)]
pub struct Cli<S: Service> {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config<S>,
}

/// One service's configuration, from flags or the environment; defaults match
/// docker-compose.yml and a local Postgres and NATS.
#[derive(Debug, Clone, clap::Args)]
pub struct Config<S: Service> {
    /// Postgres database of this service; created at start if it does not exist.
    #[arg(long, env = "DATABASE_URL", global = true, default_value = S::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Where the HTTP server listens; port 0 picks a free port.
    #[arg(long, env = "HTTP_ADDR", global = true, default_value = S::DEFAULT_HTTP_ADDR)]
    pub http_addr: std::net::SocketAddr,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub settings: S::Settings,
    #[arg(skip)]
    pub service: std::marker::PhantomData<S>,
}

impl<S: Service> Config<S> {
    /// The defaults, as if no flag and no variable were set.
    pub fn defaults() -> Self {
        Config {
            database_url: S::DEFAULT_DATABASE_URL.to_owned(),
            http_addr: S::DEFAULT_HTTP_ADDR
                .parse()
                .expect("a service's default address parses"),
            common: Common::default(),
            settings: S::Settings::default(),
            service: std::marker::PhantomData,
        }
    }

    /// How this service's events name their producer on the wire.
    pub fn producer(&self) -> Producer {
        self.common.producer(S::NAME)
    }

    /// The JetStream names derived from the namespace.
    pub fn nats_names(&self) -> EventNames {
        EventNames::new(
            &self.common.events_namespace,
            S::NAME,
            S::OWN_EVENTS,
            S::OTHER_EVENTS,
        )
    }
}

/// `<service> [serve]` or `<service> replay`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Serve HTTP and run the relay, the consumer and its reactions (the default).
    Serve,
    /// Rebuild projections from the events in this service's database (its own events from
    /// the store, the other service's from the inbox), while the service may keep running.
    /// Needs only DATABASE_URL.
    Replay(ReplayArgs),
    /// Send this service's events to NATS again (a broker replaced from scratch). Consumers
    /// take each event once however often it is sent. Needs DATABASE_URL and NATS_URL.
    Republish(RepublishArgs),
}

pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_NAMESPACE: &str = "shop";
pub const DEFAULT_STREAM_REPLICAS: u8 = 1;
pub const DEFAULT_LOG_FILTER: &str = "info";
pub const DEFAULT_READY_MAX_LAG_SECONDS: u64 = 30;
pub const DEFAULT_POOL_SIZE: u32 = 20;
/// How long a response is kept for its `Idempotency-Key`.
pub const DEFAULT_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// The settings both services share, with the same defaults (docker-compose.yml's).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct Common {
    /// Connections in the service's Postgres pool (HTTP requests, the consumer's batches, the
    /// relay's reads); the relay's leadership lock uses one more.
    #[arg(long, env = "DATABASE_POOL_SIZE", global = true, default_value_t = DEFAULT_POOL_SIZE)]
    pub database_pool_size: u32,
    /// The NATS server, or a cluster's nodes separated by commas
    /// (`nats://n1:4222,nats://n2:4222,nats://n3:4222`): the client connects to any of them
    /// and, when its node goes, reconnects to another.
    #[arg(long, env = "NATS_URL", global = true, default_value = DEFAULT_NATS_URL)]
    pub nats_url: String,
    /// Copies JetStream keeps of each stream: 1 on a single server, 3 on a three-node
    /// cluster (any one node may then be lost). The service creates its stream with it and
    /// changes an existing stream's count to it.
    #[arg(long, env = "NATS_STREAM_REPLICAS", global = true, default_value_t = DEFAULT_STREAM_REPLICAS,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_stream_replicas: u8,
    #[command(flatten)]
    pub nats_login: NatsLoginArgs,
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
    /// How long the response to a request with an `Idempotency-Key` is kept and replayed:
    /// seconds (`86400`) or a number with a unit `ms`, `s`, `m`, `h` or `d` (`24h`). After it
    /// the key is new again.
    #[arg(
        long,
        env = "IDEMPOTENCY_RETENTION",
        global = true,
        default_value = "24h"
    )]
    pub idempotency_retention: Retention,
    /// How long an event of the other service written at a schema version newer than this
    /// service reads waits before each redelivery (10 deliveries: the time a rolling upgrade
    /// has before it is dead-lettered). Seconds or a number with a unit, like the retention.
    #[arg(long, env = "NEWER_SCHEMA_RETRY", global = true, default_value = "30s")]
    pub newer_schema_retry: Retention,
    /// Also send the headers events carried before CloudEvents (`Es-Event-Type`, ...) beside
    /// the `ce-` ones, so a consumer of the previous release still reads them. Turn it off
    /// (`false`) once every consumer is upgraded; the next release drops them.
    #[arg(
        long,
        env = "EVENTS_LEGACY_HEADERS",
        global = true,
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub events_legacy_headers: bool,
}

impl Default for Common {
    /// The documented defaults, ignoring the environment.
    fn default() -> Self {
        Common {
            database_pool_size: DEFAULT_POOL_SIZE,
            nats_url: DEFAULT_NATS_URL.to_owned(),
            nats_stream_replicas: DEFAULT_STREAM_REPLICAS,
            nats_login: NatsLoginArgs::default(),
            events_namespace: DEFAULT_NAMESPACE.to_owned(),
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            log_format: LogFormat::Text,
            admin_token: None,
            ready_max_lag_seconds: DEFAULT_READY_MAX_LAG_SECONDS,
            idempotency_retention: Retention(DEFAULT_IDEMPOTENCY_RETENTION),
            newer_schema_retry: Retention(event_store::consumer::NEWER_SCHEMA_DELAY),
            events_legacy_headers: true,
        }
    }
}

impl Common {
    /// How `service`'s events name their producer on the wire, and which headers they carry.
    pub fn producer(&self, service: &str) -> Producer {
        Producer {
            service: service.to_owned(),
            legacy_headers: self.events_legacy_headers,
        }
    }

    /// The admin token, if one is configured (an empty one counts as none).
    pub fn admin_token(&self) -> Option<AdminToken> {
        AdminToken::configured(self.admin_token.as_ref())
    }

    /// How old an unprocessed event may get before readiness fails; `None`: no limit.
    pub fn ready_max_lag(&self) -> Option<Duration> {
        (self.ready_max_lag_seconds > 0).then(|| Duration::from_secs(self.ready_max_lag_seconds))
    }
}

/// A retention period or delay: whole seconds, or a number with a unit `ms`, `s`, `m`, `h` or
/// `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Duration);

impl std::str::FromStr for Retention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: u64 = number.parse().map_err(|_| {
            format!("{s:?} is not a duration such as 86400, 500ms, 90s, 15m, 24h or 7d")
        })?;
        let millis_per_unit = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60 * 1000,
            "h" => 60 * 60 * 1000,
            "d" => 24 * 60 * 60 * 1000,
            other => return Err(format!("unknown unit {other:?}: use ms, s, m, h or d")),
        };
        let millis = number
            .checked_mul(millis_per_unit)
            .filter(|ms| *ms > 0)
            .ok_or_else(|| format!("{s:?} must be positive and not absurdly long"))?;
        Ok(Retention(Duration::from_millis(millis)))
    }
}

/// The JetStream names of one service in one namespace: the stream its relay publishes to,
/// the other service's stream its consumer reads, and its durable consumer and dead letters.
/// Both services derive them here, so each names the other's stream as the other does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNames {
    /// This service's stream and subject prefix (`<ns>_<own>_events`, `<ns>.<own>.events`).
    pub own_stream: String,
    pub own_subjects: String,
    /// The other service's stream and subject prefix, consumed here.
    pub other_stream: String,
    pub other_subjects: String,
    /// The durable consumer on `other_stream`: the service's name.
    pub durable: String,
    pub dead_letter_subject: String,
}

impl EventNames {
    /// The names in namespace `ns` of `service`, whose events are `own` (such as `order`) and
    /// which consumes `other`'s.
    pub fn new(ns: &str, service: &str, own: &str, other: &str) -> Self {
        EventNames {
            own_stream: stream_name(ns, own),
            own_subjects: subject_prefix(ns, own),
            other_stream: stream_name(ns, other),
            other_subjects: subject_prefix(ns, other),
            durable: service.to_owned(),
            dead_letter_subject: format!("{ns}.deadletter.{service}"),
        }
    }
}

/// The JetStream stream holding `source`'s events (`order`, `product`) in namespace `ns`.
pub fn stream_name(ns: &str, source: &str) -> String {
    format!("{ns}_{source}_events")
}

/// The subject prefix of `source`'s events in namespace `ns`: `<ns>.<source>.events`.
pub fn subject_prefix(ns: &str, source: &str) -> String {
    format!("{ns}.{source}.events")
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The token that opens `/admin/*`. Never printed: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: impl Into<String>) -> Self {
        AdminToken(token.into())
    }

    /// The token of a configuration, if one is set: an empty one counts as none, so
    /// `ADMIN_TOKEN=` keeps the admin routes closed.
    pub fn configured(token: Option<&AdminToken>) -> Option<AdminToken> {
        token.filter(|t| !t.0.is_empty()).cloned()
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

/// The NATS user a service logs in as. Both unset: no authentication (a server without
/// users, as the tests' servers are); docker-compose.yml gives each service its own user
/// (docker/nats.conf). `Debug` hides the password.
#[derive(Clone, Default, PartialEq, Eq, clap::Args)]
pub struct NatsLoginArgs {
    #[arg(long = "nats-user", env = "NATS_USER", global = true)]
    pub user: Option<String>,
    #[arg(
        long = "nats-password",
        env = "NATS_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub password: Option<String>,
}

impl NatsLoginArgs {
    /// The login, if one is configured; only one of the two set is an error.
    pub fn login(&self) -> anyhow::Result<Option<event_store::nats::Login>> {
        event_store::nats::Login::from_parts(self.user.clone(), self.password.clone())
    }
}

impl std::fmt::Debug for NatsLoginArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsLoginArgs")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "hidden"))
            .finish()
    }
}

/// Arguments of `<service> republish`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RepublishArgs {
    /// Send the events after this store position (0: all of them).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub from_position: i64,
}

/// Arguments of `<service> replay`.
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

/// A service for the shared pieces' own tests.
#[cfg(test)]
pub(crate) mod test_service {
    use super::{NoSettings, Service};

    #[derive(Debug, Clone)]
    pub(crate) struct Shop;

    impl Service for Shop {
        const NAME: &'static str = "shop-service";
        const ABOUT: &'static str = "A shop";
        const OWN_EVENTS: &'static str = "shop";
        const OTHER_EVENTS: &'static str = "stock";
        const DEFAULT_DATABASE_URL: &'static str = "postgres://localhost/shop";
        const DEFAULT_HTTP_ADDR: &'static str = "127.0.0.1:0";
        type Settings = NoSettings;
    }
}

#[cfg(test)]
mod tests {
    use super::test_service::Shop;
    use super::*;

    #[test]
    fn names_derive_from_the_namespace_and_mirror_each_other() {
        let order = EventNames::new("shop", "order-service", "order", "product");
        assert_eq!(order.own_stream, "shop_order_events");
        assert_eq!(order.own_subjects, "shop.order.events");
        assert_eq!(order.other_stream, "shop_product_events");
        assert_eq!(order.other_subjects, "shop.product.events");
        assert_eq!(order.durable, "order-service");
        assert_eq!(order.dead_letter_subject, "shop.deadletter.order-service");
        let product = EventNames::new("shop", "product-service", "product", "order");
        assert_eq!(product.other_stream, order.own_stream);
        assert_eq!(product.own_subjects, order.other_subjects);
    }

    #[test]
    fn the_token_matches_only_itself_and_is_never_printed() {
        let token = AdminToken::new("s3cret");
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3creT"));
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn retention_reads_seconds_or_a_unit() {
        let parse = |s: &str| s.parse::<Retention>().map(|r| r.0.as_secs());
        assert_eq!(parse("86400"), Ok(86400));
        assert_eq!(parse("90s"), Ok(90));
        assert_eq!(parse("15m"), Ok(900));
        assert_eq!(parse("24h"), Ok(86400));
        assert_eq!(parse("7d"), Ok(604800));
        let millis = "200ms".parse::<Retention>().map(|r| r.0);
        assert_eq!(millis, Ok(Duration::from_millis(200)));
        for bad in ["", "0", "0ms", "h", "1w", "-5", "1.5h", "5mss"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    fn parse(args: &[&str]) -> Cli<Shop> {
        use clap::Parser;
        Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_empty_admin_token_disables_admin_and_a_set_one_is_kept() {
        let cli = parse(&["shop-service", "--admin-token", ""]);
        assert_eq!(cli.config.common.admin_token(), None);
        let cli = parse(&["shop-service", "--admin-token", "s3cret"]);
        let token = cli.config.common.admin_token();
        assert!(token.is_some_and(|t| t.matches("s3cret")));
    }

    #[test]
    fn the_readiness_lag_limit_defaults_to_30_seconds_and_0_turns_it_off() {
        let lag = Config::<Shop>::defaults().common.ready_max_lag();
        assert_eq!(lag, Some(Duration::from_secs(30)));
        let cli = parse(&["shop-service", "--ready-max-lag-seconds", "0"]);
        assert_eq!(cli.config.common.ready_max_lag(), None);
    }

    #[test]
    fn flags_work_before_and_after_the_subcommand() {
        for args in [
            &["shop-service", "--events-namespace", "t1", "serve"][..],
            &["shop-service", "serve", "--events-namespace", "t1"][..],
        ] {
            let cli = parse(args);
            assert_eq!(cli.command, Some(Command::Serve));
            assert_eq!(cli.config.common.events_namespace, "t1");
        }
    }

    #[test]
    fn an_empty_token_counts_as_none() {
        assert_eq!(AdminToken::configured(Some(&AdminToken::new(""))), None);
        assert_eq!(AdminToken::configured(None), None);
        let set = AdminToken::new("t");
        assert_eq!(AdminToken::configured(Some(&set)), Some(set));
    }
}
