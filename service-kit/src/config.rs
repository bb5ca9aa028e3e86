//! The parts of the command line both services share: how logs are written, the token that
//! opens `/admin/*`, and the arguments of the `replay` command. Each service's own `Config`
//! keeps what differs (defaults, stream names).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_matches_only_itself_and_is_never_printed() {
        let token = AdminToken::new("s3cret");
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3creT"));
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn an_empty_token_counts_as_none() {
        assert_eq!(AdminToken::configured(Some(&AdminToken::new(""))), None);
        assert_eq!(AdminToken::configured(None), None);
        let set = AdminToken::new("t");
        assert_eq!(AdminToken::configured(Some(&set)), Some(set));
    }
}
