//! A private Postgres cluster for tests that stop the database under load: `initdb` into a
//! temporary directory, `postgres` on a free port with trust authentication, removed on drop.
//!
//! Postgres refuses to run as root. When the tests run as root (CI containers), the cluster
//! belongs to the `postgres` OS user (`PG_SERVER_USER` to pick another) and its processes are
//! started as that user directly, so signals reach the postmaster and no wrapper is involved.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const INSTALL_HINT: &str = "install PostgreSQL's server binaries (Debian: `apt-get install \
     postgresql`) or set PG_BIN_DIR to the directory holding initdb and postgres";

/// A Postgres server of a test's own. `url()` is its `postgres` database as user `postgres`.
pub struct PgServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    bin_dir: PathBuf,
    /// The (uid, gid) to run the server as, when the tests run as root.
    run_as: Option<(u32, u32)>,
}

impl PgServer {
    /// Creates a cluster with `initdb` and starts it, waiting until it accepts connections.
    pub fn start() -> PgServer {
        PgServer::start_with_xid_epoch(0)
    }

    /// [`PgServer::start`], with the cluster's transaction ids raised to `epoch << 32` and up
    /// (`pg_resetwal -e` before the first start): the 64-bit ids (`pg_current_xact_id()`) of a
    /// server that has been busy for a long time. Tests of moving a database take it as the
    /// source, so its ids are provably above a fresh cluster's.
    pub fn start_with_xid_epoch(epoch: u32) -> PgServer {
        let bin_dir = bin_dir();
        let dir = tempfile::tempdir().expect("a directory for the private Postgres cluster");
        let owner = std::fs::metadata(dir.path())
            .expect("the cluster directory")
            .uid();
        // A fresh directory is owned by the effective user: that is how we learn we are root.
        let run_as = (owner == 0).then(|| {
            let user = std::env::var("PG_SERVER_USER").unwrap_or_else(|_| "postgres".to_owned());
            let ids = (id(&["-u", &user]), id(&["-g", &user]));
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .expect("handing the cluster directory to the Postgres user");
            ids
        });
        let mut server = PgServer {
            child: None,
            port: free_port(),
            dir,
            bin_dir,
            run_as,
        };
        server.initdb();
        if epoch > 0 {
            server.run("pg_resetwal", &["-e", &epoch.to_string()]);
        }
        server.restart();
        server
    }

    /// Copies database `database` of the server at `source_url` into this server, as
    /// moving it would: `pg_dump` (custom format), then `pg_restore` into a new database of
    /// the same name here. Returns the copy's URL.
    pub fn restore_from(&self, source_url: &str, database: &str) -> String {
        let dump = self.dir.path().join(format!("{database}.dump"));
        let source = super::with_database(source_url, database);
        let tool = |program: &str, args: &[&std::ffi::OsStr]| {
            // Client tools connect over TCP, so they need not run as the cluster's owner.
            let output = Command::new(self.bin(program))
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {INSTALL_HINT}"));
            assert!(
                output.status.success(),
                "{program} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        };
        tool(
            "pg_dump",
            &[
                "-Fc".as_ref(),
                "-d".as_ref(),
                source.as_ref(),
                "-f".as_ref(),
                dump.as_os_str(),
            ],
        );
        tool(
            "pg_restore",
            &[
                "--create".as_ref(),
                "--exit-on-error".as_ref(),
                "-d".as_ref(),
                self.url().as_ref(),
                dump.as_os_str(),
            ],
        );
        super::with_database(&self.url(), database)
    }

    /// The `postgres` database of this server, as superuser `postgres`, no password.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Fast shutdown (SIGINT: sessions are ended, transactions rolled back, the data is
    /// flushed), waiting until the server has exited.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-s", "INT", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the server again on the same port and data, waiting until it accepts
    /// connections.
    pub fn restart(&mut self) {
        self.stop();
        let log = File::create(self.log_path()).expect("the private Postgres log file");
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1"])
            // No Unix socket: its default directory may not exist or not be writable.
            .args(["-k", ""])
            // A test cluster: clean shutdowns flush everything; only an OS crash could lose data.
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}): {INSTALL_HINT}",
                self.bin("postgres").display()
            )
        });
        self.child = Some(child);
        self.wait_accepting();
    }

    fn initdb(&self) {
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): {INSTALL_HINT}",
                    self.bin("initdb").display()
                )
            });
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Runs a server tool on the stopped cluster's data directory, as its owner.
    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .arg("-D")
            .arg(self.data_dir())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): {INSTALL_HINT}",
                    self.bin(program).display()
                )
            });
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn wait_accepting(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(self.bin("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                panic!("the private Postgres did not start ({exited:?}); its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A command from the server's bin directory, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin(program));
        command.current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn bin(&self, program: &str) -> PathBuf {
        self.bin_dir.join(program)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `PG_BIN_DIR`, else the newest `/usr/lib/postgresql/<version>/bin` (Debian, Ubuntu), else
/// the directory of `initdb` on the PATH.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return dir.into();
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: f64 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((_, bin)) = newest {
        return bin;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").exists())
        .unwrap_or_else(|| panic!("initdb was not found: {INSTALL_HINT}"))
}

/// `id <args>` as a number: the uid or gid of a user.
fn id(args: &[&str]) -> u32 {
    let output = Command::new("id")
        .args(args)
        .output()
        .expect("running `id`");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "the tests run as root, so the private Postgres must run as another user, but \
                 `id {}` failed; create the user or set PG_SERVER_USER",
                args.join(" ")
            )
        })
}
