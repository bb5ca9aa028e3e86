//! Connecting to NATS and declaring the JetStream stream a service publishes to.

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, stream};
use async_nats::Client;

/// Oldest server this project supports: Debian's 2.9. Fields added in 2.10+ (for example
/// several filter subjects per consumer) are silently ignored by 2.9, so nothing here uses them.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 9);

/// How long JetStream remembers a `Nats-Msg-Id` to drop a re-published duplicate.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

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

/// Connects to `url`, as `login` when given, without waiting for the server: the client keeps
/// retrying in the background, so a service starts (and takes writes) while NATS is down. The
/// server version is checked by [`ensure_stream`], the first call that needs an answer from
/// the server. What a user may publish is the server's decision (docker/nats.conf).
pub async fn connect(url: &str, login: Option<&Login>) -> anyhow::Result<Client> {
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
        .connect(url)
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

/// Creates the file-backed stream `name` capturing `<subject_prefix>.>` if it is missing, and
/// refuses a server older than [`MIN_SERVER_VERSION`] (checked here because the server has
/// answered by now, so its version is known).
///
/// Safe to call from several processes at once (both services declare both streams, a test
/// declares the stream it publishes to while the service under test starts, and replicas start
/// together): when two find the stream missing and both create it, the server can answer the
/// loser with an error or not at all (nats.go#949), although the stream now exists; a loaded
/// server can also answer a create it carried out too late for the request's timeout. So a
/// create that fails while the connection is up is followed by one lookup, and only a stream
/// that is still missing is an error. (While disconnected the lookup would only wait out
/// another timeout, so the error is returned at once.)
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    subject_prefix: &str,
) -> anyhow::Result<stream::Stream> {
    let created = js
        .get_or_create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{subject_prefix}.>")],
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await;
    let stream = match created {
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
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::{check_version, Login};

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
