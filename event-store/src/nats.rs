//! Connecting to NATS and declaring the JetStream stream a service publishes to.

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, stream};
use async_nats::{Client, ServerAddr};

/// Oldest server this project supports: Debian's 2.9. Fields added in 2.10+ (for example
/// several filter subjects per consumer) are silently ignored by 2.9, so nothing here uses them.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 9);

/// How long JetStream remembers a `Nats-Msg-Id` to drop a re-published duplicate.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How often the client pings its server. A node cut off by a partition closes nothing: the
/// client only learns it is gone when two pings go unanswered, so this bounds how long a
/// service keeps talking to a node the cluster has left behind (async-nats' default is 60 s).
pub const PING_INTERVAL: Duration = Duration::from_secs(2);

/// The wait for a JetStream API answer or a publish ack. While a stream or consumer elects a
/// leader, a request sent to the old one is never answered; a short wait and another try
/// (the relay and the consumer both try again) carries on sooner than async-nats' defaults
/// (10 s for requests, 5 s for acks). A healthy server answers in milliseconds, and a publish
/// sent again after a slow ack is dropped as a duplicate by its `Nats-Msg-Id`.
pub const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a stream found deleted is left alone before it is declared again. nats-server
/// (2.9.10 and 2.15.1 alike) takes a deleted stream off its books before it removes the
/// stream's files. A stream declared in between gets a store whose message directory the
/// deletion then removes, and from then on it stores nothing. 2.9 answers each publish with
/// "store failed" (10077), and 2.15 answers none. A create sent at the same moment as the
/// delete breaks the stream about 40% of the time, and one sent a millisecond later 0 of 200
/// times. So this wait is long enough, and cheap after a stream is lost. A stream broken anyway
/// (by a declare from elsewhere) is replaced by its relay (`relay::resend`).
pub const REDECLARE_AFTER: Duration = Duration::from_millis(500);

/// The JetStream context of `client`, with [`JETSTREAM_TIMEOUT`].
pub fn jetstream(client: Client) -> jetstream::Context {
    let mut context = jetstream::new(client);
    context.set_timeout(JETSTREAM_TIMEOUT);
    context
}

/// A NATS user and its password (`NATS_USER`, `NATS_PASSWORD`). `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl Login {
    /// The login of a configuration: none when neither is set (a server without
    /// authentication), an error when only one of them is.
    pub fn from_parts(
        user: Option<String>,
        password: Option<String>,
    ) -> anyhow::Result<Option<Login>> {
        match (user, password) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) => Ok(Some(Login { user, password })),
            (Some(_), None) => anyhow::bail!("NATS_USER is set but NATS_PASSWORD is not"),
            (None, Some(_)) => anyhow::bail!("NATS_PASSWORD is set but NATS_USER is not"),
        }
    }
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"hidden")
            .finish()
    }
}

/// The servers of `urls`: one URL, or several separated by commas (the nodes of a cluster,
/// `nats://n1:4222,nats://n2:4222,nats://n3:4222`), as the `nats` CLI takes them.
pub fn server_addrs(urls: &str) -> anyhow::Result<Vec<ServerAddr>> {
    let addrs = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|e| anyhow::anyhow!("NATS URL {url:?} is not valid: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!addrs.is_empty(), "no NATS URL given");
    Ok(addrs)
}

/// Connects to `urls` (one server or a cluster's nodes, see [`server_addrs`]), as `login`
/// when given, without waiting for the server: the client keeps retrying in the background,
/// so a service starts (and takes writes) while NATS is down, and after losing its node it
/// reconnects to any other (the servers a cluster announces are added to the list). The
/// server version is checked by [`declare_stream`], the first call that needs an answer from
/// the server. What a user may publish is the server's decision (docker/nats.conf).
pub async fn connect(urls: &str, login: Option<&Login>) -> anyhow::Result<Client> {
    let addrs = server_addrs(urls)?;
    let options = match login {
        Some(login) => async_nats::ConnectOptions::with_user_and_password(
            login.user.clone(),
            login.password.clone(),
        ),
        None => async_nats::ConnectOptions::new(),
    };
    Ok(options
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .ping_interval(PING_INTERVAL)
        .connect(addrs)
        .await?)
}

/// Fails for servers older than [`MIN_SERVER_VERSION`]; an unparsable version is let through.
pub fn check_version(version: &str) -> anyhow::Result<()> {
    let mut parts = version.split('.').map(|p| p.parse::<u64>());
    if let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) {
        if (major, minor) < MIN_SERVER_VERSION {
            anyhow::bail!(
                "nats-server {version} is too old: {}.{} or newer is needed",
                MIN_SERVER_VERSION.0,
                MIN_SERVER_VERSION.1
            );
        }
    }
    tracing::debug!(version, "nats-server version supported");
    Ok(())
}

/// Who decides a stream's configuration when it already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declare {
    /// The service that publishes to it: an existing stream's replica count is changed to the
    /// one asked for (so `NATS_STREAM_REPLICAS` takes effect on a running system).
    Own,
    /// A consumer, or a test: a missing stream is created, an existing one is left as it is.
    Other,
}

/// The configuration streams are declared with: file-backed, capturing `<subject_prefix>.>`,
/// with `replicas` copies.
pub fn stream_config(name: &str, subject_prefix: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{subject_prefix}.>")],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas.max(1),
        ..Default::default()
    }
}

/// [`declare_stream`] with one replica, leaving an existing stream as it is.
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    subject_prefix: &str,
) -> anyhow::Result<stream::Stream> {
    declare_stream(js, name, subject_prefix, 1, Declare::Other).await
}

/// Creates the file-backed stream `name` capturing `<subject_prefix>.>` with `replicas`
/// copies (on a cluster, 3 survives the loss of any one node) if it is missing; for
/// [`Declare::Own`], also changes an existing stream's replica count to `replicas` (the
/// server moves the data; a refusal, such as more replicas than nodes, is logged and the
/// stream used as it is). Refuses a server older than [`MIN_SERVER_VERSION`] (checked here
/// because the server has answered by now, so its version is known).
///
/// Safe to call from several processes at once (both services declare both streams, a test
/// declares the stream it publishes to while the service under test starts, and replicas start
/// together): when two find the stream missing and both create it, the server can answer the
/// loser with an error or not at all (nats.go#949), although the stream now exists; a loaded
/// server can also answer a create it carried out too late for the request's timeout. So a
/// create that fails while the connection is up is followed by one lookup, and only a stream
/// that is still missing is an error. (While disconnected the lookup would only wait out
/// another timeout, so the error is returned at once.) A stream is only ever created when the
/// server says it does not exist, never because a lookup failed: during a cluster's leader
/// election the lookup times out, and the stream is still there.
pub async fn declare_stream(
    js: &jetstream::Context,
    name: &str,
    subject_prefix: &str,
    replicas: usize,
    declare: Declare,
) -> anyhow::Result<stream::Stream> {
    let created = js
        .get_or_create_stream(stream_config(name, subject_prefix, replicas))
        .await;
    let mut stream = match created {
        Ok(stream) => stream,
        Err(create_error) => {
            let existing = if js.client().connection_state() == State::Connected {
                js.get_stream(name).await.ok()
            } else {
                None
            };
            let Some(stream) = existing else {
                return Err(anyhow::Error::new(create_error)
                    .context(format!("declaring JetStream stream {name}")));
            };
            tracing::debug!(stream = name, error = %create_error, "stream created concurrently");
            stream
        }
    };
    check_version(&js.client().server_info().version)?;
    let has = stream.cached_info().config.num_replicas.max(1);
    if declare == Declare::Own && has != replicas.max(1) {
        let mut config = stream.cached_info().config.clone();
        config.num_replicas = replicas.max(1);
        match js.update_stream(&config).await {
            Ok(_) => {
                tracing::info!(
                    stream = name,
                    from = has,
                    to = config.num_replicas,
                    "stream replicas changed"
                );
                stream = js.get_stream(name).await?;
            }
            Err(e) => tracing::warn!(
                stream = name,
                replicas = has,
                wanted = config.num_replicas,
                error = %e,
                "cannot change the stream's replica count; using it as it is"
            ),
        }
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::{check_version, server_addrs, Login};

    #[test]
    fn a_cluster_is_given_as_urls_separated_by_commas() {
        let addrs = server_addrs("nats://a:4222, nats://b:4223,nats://c:4224").expect("three URLs");
        let ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert_eq!(
            server_addrs("nats://127.0.0.1:4222").map(|a| a.len()).ok(),
            Some(1)
        );
        assert!(server_addrs("").is_err());
        assert!(server_addrs(" , ").is_err());
        assert!(server_addrs("nats://a:4222,nats://b:notaport").is_err());
    }

    #[test]
    fn a_login_needs_both_user_and_password_and_hides_the_password() {
        assert_eq!(Login::from_parts(None, None).ok(), Some(None));
        let login = Login::from_parts(Some("viewer".into()), Some("s3cret".into()))
            .ok()
            .flatten()
            .expect("a login from both parts");
        assert_eq!(login.user, "viewer");
        assert!(!format!("{login:?}").contains("s3cret"));
        assert!(Login::from_parts(Some("viewer".into()), None).is_err());
        assert!(Login::from_parts(None, Some("s3cret".into())).is_err());
    }

    #[test]
    fn servers_from_2_9_on_are_accepted_and_older_ones_refused() {
        for ok in ["2.9.10", "2.10.0", "2.15.1", "3.0.0", "weird"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for old in ["2.8.4", "1.4.0"] {
            assert!(check_version(old).is_err(), "{old}");
        }
    }
}
