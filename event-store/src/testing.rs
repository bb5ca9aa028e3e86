//! Test support shared by every crate's tests: a fresh database per test, unique NATS names,
//! and private nats-servers and Postgres clusters ([`PgServer`]) for tests that must stop one;
//! what only tests need of the store ([`catch_up`], [`read_inbox`]), and the golden event
//! fixtures' check ([`EventFixtures`]).
//! Enabled by the `testing` feature.

pub mod fixtures;
mod pg_server;
mod reads;

pub use fixtures::{EventFixtures, Reader};
pub use pg_server::PgServer;
pub use reads::{catch_up, read_inbox};

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

const START_POSTGRES: &str =
    "start it with `pg_ctlcluster 15 main start` (or run `scripts/test.sh`, \
     which installs and starts everything), or point DATABASE_URL at a server";
const START_NATS: &str = "start it with `nats-server -js` (or run `scripts/test.sh`), \
     or point NATS_URL at a server with JetStream";

/// The server tests create their databases on: `DATABASE_URL`, by default the local one.
pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The shared NATS server: `NATS_URL`, by default the local one.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A name no other test uses, valid as a database, JetStream stream or subject token.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

/// Logs to the test output when `TEST_LOG` is set.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_test_writer()
                .try_init();
        }
    });
}

/// A database of its own for one test, migrated, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    /// The server's maintenance database, from which the test database is dropped.
    admin_url: String,
}

impl TestDb {
    /// Creates and migrates a fresh database.
    pub async fn new() -> TestDb {
        let db = TestDb::empty().await;
        crate::EventStore::new(db.pool.clone())
            .migrate()
            .await
            .expect("migrating the test database");
        db
    }

    /// Creates a fresh database with no tables on the shared server.
    pub async fn empty() -> TestDb {
        TestDb::empty_on(&admin_database_url()).await
    }

    /// Creates a fresh database with no tables on the server of `admin_url` (a private
    /// [`PgServer`], say).
    pub async fn empty_on(admin_url: &str) -> TestDb {
        let admin_url = admin_url.to_owned();
        let mut admin =
            tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin_url))
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .unwrap_or_else(|e| {
                    panic!("Postgres is not reachable at {admin_url} ({e}): {START_POSTGRES}")
                });
        let name = unique("es_test");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("creating the test database");
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .connect(&url)
            .await
            .expect("connecting to the test database");
        TestDb {
            name,
            url,
            pool,
            admin_url,
        }
    }

    pub fn store(&self) -> crate::EventStore {
        crate::EventStore::new(self.pool.clone())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        // Drop may run on the test's runtime thread, so the cleanup gets a thread and runtime of
        // its own. FORCE closes the pool's connections; closing the pool from here would wait
        // on the blocked runtime.
        on_own_runtime(async move {
            // A private server may be gone already, so the attempt is bounded.
            let connect = PgConnection::connect(&admin_url);
            if let Ok(Ok(mut admin)) = tokio::time::timeout(Duration::from_secs(5), connect).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        });
    }
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{prefix}/{database}?{q}"),
        None => format!("{prefix}/{database}"),
    }
}

/// Connects to the shared NATS server, failing fast with a hint when it is down.
pub async fn connect_nats() -> async_nats::Client {
    let url = nats_url();
    match tokio::time::timeout(Duration::from_secs(5), async_nats::connect(&url)).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => panic!("NATS is not reachable at {url} ({e}): {START_NATS}"),
        Err(_) => panic!("NATS is not reachable at {url} (timed out): {START_NATS}"),
    }
}

/// Publishes to `subject` and waits until JetStream has stored the message, sending it again
/// (for up to 10 s) while the server answers that no stream listens on the subject.
///
/// A stream just declared can answer so for a moment: in CI a test's publish right after
/// [`crate::nats::ensure_stream`] returned was answered 503 (no responders) on nats-server
/// 2.9, while the service under test was declaring the same stream at the same time. The
/// relay sends again for the same reason (`relay.rs`). Give the message a `Nats-Msg-Id`, so a
/// resend of one that was stored after all is dropped as a duplicate.
pub async fn publish_stored(
    js: &async_nats::jetstream::Context,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
) -> async_nats::jetstream::publish::PublishAck {
    use async_nats::jetstream::context::PublishErrorKind;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent = js
            .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
            .await
            .expect("sending to NATS");
        match sent.await {
            Ok(ack) => return ack,
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("JetStream did not store the message on {subject}: {e}"),
        }
    }
}

/// How long a test waits for something asynchronous (a consumer, a projector, the relay)
/// before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` every 50 ms until it yields a value; fails the test after [`PATIENCE`],
/// saying it gave up waiting for `what`.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what} after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `event` as `service`'s relay sends it (the CloudEvents envelope, without the old headers),
/// with a `Nats-Msg-Id`: the headers and body a test publishes to play the other service.
pub fn as_relayed(
    service: &str,
    event: &crate::RecordedEvent,
) -> (async_nats::HeaderMap, bytes::Bytes) {
    let producer = crate::envelope::Producer {
        service: service.to_owned(),
        legacy_headers: false,
    };
    let (mut headers, body) = crate::envelope::encode(&producer, event, None).expect("encoding");
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        event.event_id.to_string().as_str(),
    );
    (headers, body)
}

/// Deletes `streams` from the NATS server at `url`, so a test leaves nothing behind. Blocking
/// (a test app's `Drop` calls it); a server that does not answer within seconds is left alone.
pub fn delete_streams(url: &str, streams: Vec<String>) {
    let url = url.to_owned();
    on_own_runtime(async move {
        let connect = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(1))
            .connect(url);
        let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(2), connect).await else {
            return;
        };
        let js = async_nats::jetstream::new(client);
        for stream in streams {
            let _ = tokio::time::timeout(Duration::from_secs(2), js.delete_stream(stream)).await;
        }
    });
}

/// Runs `work` to its end on a thread and runtime of its own, and waits for it: a `Drop` may
/// run on the test's runtime thread, which is blocked in the drop, so cleanup cannot use it.
pub fn on_own_runtime(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(work);
        }
    })
    .join();
}

/// A nats-server of a test's own, on a free port with its own store directory, killed on drop.
/// The binary is `NATS_SERVER_BIN`, by default `nats-server` on the PATH.
/// A private server's files of one stream ([`NatsServer::stream_files`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFiles {
    Present,
    Gone,
    GoneButOpen,
}

pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_with(Vec::new(), Vec::new())
    }

    /// A private server with more arguments (a configuration file: `-c <path>`) and
    /// environment variables (the ones that file refers to).
    pub fn start_with(args: Vec<String>, env: Vec<(String, String)>) -> NatsServer {
        let bin = PathBuf::from(
            std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned()),
        );
        let port = free_port();
        let dir = tempfile::tempdir().expect("a store directory for nats-server");
        let mut server = NatsServer {
            child: None,
            port,
            dir,
            bin,
            args,
            env,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server binary's version (`2.9.10`), as `nats-server --version` prints it.
    pub fn version(&self) -> String {
        let output = Command::new(&self.bin)
            .arg("--version")
            .output()
            .expect("nats-server --version");
        let printed = String::from_utf8_lossy(&output.stdout);
        printed
            .trim()
            .rsplit('v')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// Where the server keeps stream `name`'s files (its messages under `msgs`).
    pub fn stream_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("jetstream/$G/streams").join(name)
    }

    /// How stream `name`'s message files stand: there, gone, or gone while the server still
    /// writes to one it opened before (it then acknowledges messages into a deleted file).
    pub fn stream_files(&self, name: &str) -> StreamFiles {
        let dir = self.stream_dir(name);
        if dir.join("msgs").is_dir() {
            return StreamFiles::Present;
        }
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return StreamFiles::Gone;
        };
        let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .any(|file| file.starts_with(&dir));
        if open {
            StreamFiles::GoneButOpen
        } else {
            StreamFiles::Gone
        }
    }

    /// Kills the server (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again with its store emptied: every stream, message
    /// and consumer is gone, as after a lost volume or a broker rebuilt from scratch.
    pub fn restart_empty(&mut self) {
        self.stop();
        for entry in std::fs::read_dir(self.dir.path()).expect("the store directory") {
            let path = entry.expect("a store entry").path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.expect("emptying the store directory");
        }
        self.restart();
    }

    /// Starts the server again on the same port and store, waiting until it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .args(&self.args)
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install nats-server or set NATS_SERVER_BIN",
                    self.bin.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
