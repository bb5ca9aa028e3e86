//! The processes of a run: the two services (started by [`tests::TestSystem`]), found again by
//! their process ids for memory sampling, and the reads' helper servers (the ceiling and the
//! database baseline), this same executable run with a hidden subcommand so each is a process
//! of its own like the services.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The services a run starts.
pub const SERVICES: [&str; 2] = ["product-service", "order-service"];
/// What builds them, and this load generator, for measuring.
pub const BUILD_COMMAND: &str = "cargo build --release --workspace --bins";

/// Where [`tests::service_binary`] will look for `name`: next to this executable.
pub fn binary_path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let dir = exe.parent().context("this executable has no directory")?;
    Ok(dir.join(name))
}

/// Fails with the build command when a service binary is missing; warns about a debug build.
pub fn check_binaries() -> anyhow::Result<()> {
    for name in SERVICES {
        let path = binary_path(name)?;
        if !path.exists() {
            bail!(
                "{} is missing. Build the services next to the load generator first:\n    {BUILD_COMMAND}\n\
                 then run it with `cargo run --release -p loadgen`",
                path.display()
            );
        }
    }
    let exe = std::env::current_exe()?;
    if exe.parent().is_some_and(|d| d.ends_with("debug")) {
        eprintln!("warning: this is a debug build; its figures mean little. Use --release.");
    }
    Ok(())
}

/// The process id of this process's child running `binary`, if there is one.
pub fn child_pid(binary: &Path) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            parent_pid(&stat) == Some(me) && exe.as_deref() == Some(binary)
        })
}

/// The parent pid from a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may itself hold spaces or parentheses, so fields are counted after the last `)`.
pub fn parent_pid(stat: &str) -> Option<u32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// A helper server of the reads, this executable run with a hidden subcommand in a process of
/// its own: the trivial ceiling (`ceiling`) or the database baseline (`db-ceiling`). Killed on
/// drop.
pub struct HelperServer {
    pub base_url: String,
    pub pid: u32,
    child: Child,
}

/// The ceiling: a trivial actix-web server.
pub type CeilingServer = HelperServer;

impl HelperServer {
    /// Starts this executable's `ceiling` subcommand serving the two bodies, and waits for it.
    pub async fn start(order_body: &str, product_body: &str) -> anyhow::Result<HelperServer> {
        let args = ["--order-body", order_body, "--product-body", product_body];
        HelperServer::spawn("ceiling", &args, "/order").await
    }

    /// Starts the `db-ceiling` subcommand on `database_url` with a pool of `pool_size`, and
    /// waits for it.
    pub async fn start_db(database_url: &str, pool_size: u32) -> anyhow::Result<HelperServer> {
        let pool = pool_size.to_string();
        let args = ["--database-url", database_url, "--pool-size", &pool];
        HelperServer::spawn("db-ceiling", &args, "/health").await
    }

    /// Runs `subcommand --port <free port> args...` and waits until `ready` answers 2xx.
    async fn spawn(subcommand: &str, args: &[&str], ready: &str) -> anyhow::Result<HelperServer> {
        let port = event_store::testing::free_port();
        let child = Command::new(std::env::current_exe()?)
            .args([subcommand, "--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting the {subcommand} server"))?;
        let server = HelperServer {
            base_url: format!("http://127.0.0.1:{port}"),
            pid: child.id(),
            child,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = http.get(format!("{}{ready}", server.base_url)).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("the {subcommand} server did not answer within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HelperServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_pid_is_read_after_the_command_name_even_a_strange_one() {
        assert_eq!(
            parent_pid("4242 (order-service) S 17 4242 17 0 -1"),
            Some(17)
        );
        assert_eq!(parent_pid("99 (a) b (c) R 1 99 99 0"), Some(1));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn this_process_is_not_its_own_child() {
        let me = std::env::current_exe().unwrap_or_default();
        assert_eq!(child_pid(&me), None);
    }
}
