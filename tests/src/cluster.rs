//! A three-node NATS cluster of a test's own (tests/tests/faults_cluster.rs and
//! faults_partition.rs): each node a process with its own client, route and monitoring ports
//! and its own store directory, JetStream on every node, routes to every node. A node can be
//! killed (SIGKILL) and started again on the same store; who leads a stream or a consumer is
//! read from the nodes' monitoring endpoint (`/jsz`).
//!
//! Clusters need a current server: Debian's 2.9 lacks years of clustering fixes. The binary is
//! `NATS_CLUSTER_SERVER_BIN` (2.12.3 or later, checked); when it is unset the tests print a skip
//! line and pass, unless `HA_TESTS_REQUIRED=1`. scripts/test.sh sets the binary in its pass
//! with the current server, and requires the HA tests when it runs as root (as CI does).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use event_store::testing::free_port;
use serde_json::Value;

/// Oldest server the cluster tests accept.
pub const MIN_CLUSTER_SERVER: (u64, u64, u64) = (2, 12, 3);
/// How long a node may take to accept connections, or the cluster to report healthy.
const START_BOUND: Duration = Duration::from_secs(30);

/// The nats-server for clusters, or None (with a skip line printed) when none is configured
/// and the HA tests are not required. Panics on a server older than [`MIN_CLUSTER_SERVER`].
pub fn server_bin(test: &str) -> Option<PathBuf> {
    let Some(bin) = std::env::var_os("NATS_CLUSTER_SERVER_BIN").map(PathBuf::from) else {
        skip_or_fail(
            test,
            "NATS_CLUSTER_SERVER_BIN is not set (to a nats-server 2.12.3 or later)",
        );
        return None;
    };
    let output = Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", bin.display()));
    let printed = String::from_utf8_lossy(&output.stdout);
    let version = parse_version(&printed)
        .unwrap_or_else(|| panic!("{} printed no version: {printed}", bin.display()));
    let dotted = |(major, minor, patch): (u64, u64, u64)| format!("{major}.{minor}.{patch}");
    assert!(
        version >= MIN_CLUSTER_SERVER,
        "{} is nats-server {}; the cluster tests need {} or later",
        bin.display(),
        dotted(version),
        dotted(MIN_CLUSTER_SERVER)
    );
    Some(bin)
}

/// Prints why `test` is skipped, or panics with it when `HA_TESTS_REQUIRED=1`.
pub fn skip_or_fail(test: &str, why: &str) {
    if std::env::var("HA_TESTS_REQUIRED").as_deref() == Ok("1") {
        panic!("{test}: {why}, and HA_TESTS_REQUIRED=1");
    }
    eprintln!("SKIP {test}: {why}");
}

/// `nats-server: v2.15.1` -> (2, 15, 1).
fn parse_version(printed: &str) -> Option<(u64, u64, u64)> {
    let word = printed.split_whitespace().find(|w| w.starts_with('v'))?;
    let mut parts = word[1..]
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// Where a node runs: its address, and the network namespace it runs in (None: the test's own).
#[derive(Debug, Clone)]
pub struct Placement {
    pub host: String,
    pub netns: Option<String>,
}

impl Placement {
    /// Three nodes on the loopback interface, told apart by their ports.
    pub fn loopback() -> Vec<Placement> {
        (0..3)
            .map(|_| Placement {
                host: "127.0.0.1".to_owned(),
                netns: None,
            })
            .collect()
    }
}

/// A JetStream asset whose leader a test looks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asset {
    Stream(String),
    /// A durable consumer: its stream and its name.
    Consumer(String, String),
}

impl std::fmt::Display for Asset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asset::Stream(stream) => write!(f, "stream {stream}"),
            Asset::Consumer(stream, name) => write!(f, "consumer {name} on {stream}"),
        }
    }
}

struct Node {
    name: String,
    placement: Placement,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn client_url(&self) -> String {
        format!("nats://{}:{}", self.placement.host, self.client_port)
    }

    fn monitor_url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.placement.host, self.monitor_port)
    }
}

/// Three nats-server processes routed to each other, killed on drop.
pub struct NatsCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    http: reqwest::Client,
}

impl NatsCluster {
    /// Starts one node per placement and waits until every node reports healthy.
    pub async fn start(bin: PathBuf, placements: Vec<Placement>) -> NatsCluster {
        let dir = tempfile::tempdir().expect("a directory for the cluster");
        let ports: Vec<(u16, u16, u16)> = placements
            .iter()
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = placements
            .iter()
            .zip(&ports)
            .map(|(p, (_, route, _))| format!("\"nats-route://{}:{route}\"", p.host))
            .collect();
        let nodes = placements
            .into_iter()
            .zip(ports)
            .enumerate()
            .map(|(i, (placement, (client, route, monitor)))| {
                let name = format!("n{}", i + 1);
                let config = dir.path().join(format!("{name}.conf"));
                let text = node_config(
                    &name,
                    &placement.host,
                    (client, route, monitor),
                    &dir.path().join(&name),
                    &routes,
                );
                std::fs::write(&config, text).expect("writing a node's configuration");
                Node {
                    name,
                    placement,
                    client_port: client,
                    monitor_port: monitor,
                    config,
                    child: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster {
            bin,
            dir,
            nodes,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("an HTTP client"),
        };
        for node in 0..cluster.nodes.len() {
            cluster.spawn(node);
        }
        for node in 0..cluster.nodes.len() {
            cluster.wait_accepting(node).await;
        }
        cluster.wait_healthy().await;
        cluster
    }

    /// Every node's client URL, comma separated (`NATS_URL` for the services).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server name of `node` (`n1`, `n2`, `n3`).
    pub fn name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn spawn(&mut self, node: usize) {
        let log = self
            .dir
            .path()
            .join(format!("{}.log", self.nodes[node].name));
        let node = &mut self.nodes[node];
        let mut command = match &node.placement.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&self.bin);
                command
            }
            None => Command::new(&self.bin),
        };
        command.arg("-c").arg(&node.config);
        let out = crate::log_file(&format!("nats-{}-{}", node.name, node.client_port))
            .unwrap_or_else(|| std::fs::File::create(&log).expect("a node's log file"));
        let err = out.try_clone().expect("a node's log file");
        command.stdout(out).stderr(err);
        // `ip netns exec` execs the server, so the child's pid is the server's.
        node.child = Some(command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {} ({e})", self.bin.display());
        }));
    }

    async fn wait_accepting(&self, node: usize) {
        let node = &self.nodes[node];
        let deadline = Instant::now() + START_BOUND;
        let addr = (node.placement.host.as_str(), node.client_port);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not start",
                node.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills `node` as a crash would (SIGKILL) and waits for it to exit.
    pub fn kill9(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `node` again on its store and ports, waiting until it accepts connections.
    pub async fn restart(&mut self, node: usize) {
        self.kill9(node);
        self.spawn(node);
        self.wait_accepting(node).await;
    }

    /// Waits until every node's `/healthz` answers ok: each is up, JetStream is enabled and
    /// every stream and consumer replica it holds has caught up. Returns how long it took.
    pub async fn wait_healthy(&self) -> Duration {
        let started = Instant::now();
        loop {
            let mut sick = Vec::new();
            for node in &self.nodes {
                let healthy = match self.http.get(node.monitor_url("/healthz")).send().await {
                    Ok(response) => response.status().is_success(),
                    Err(_) => false,
                };
                if !healthy {
                    sick.push(node.name.as_str());
                }
            }
            if sick.is_empty() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < START_BOUND,
                "nodes {sick:?} did not report healthy in {START_BOUND:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader of `asset` as `node` sees it (None when the node does not answer, does not
    /// know the asset, or knows no leader).
    pub async fn leader_seen_by(&self, node: usize, asset: &Asset) -> Option<usize> {
        let url = self.nodes[node].monitor_url("/jsz?streams=true&consumers=true");
        let jsz: Value = self.http.get(url).send().await.ok()?.json().await.ok()?;
        let name = leader_in_jsz(&jsz, asset)?;
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Waits until one of the nodes `ask` names a leader of `asset` other than `not`, and
    /// returns it with how long it took; panics after `bound`.
    pub async fn wait_leader(
        &self,
        asset: &Asset,
        ask: &[usize],
        not: Option<usize>,
        bound: Duration,
    ) -> (usize, Duration) {
        let started = Instant::now();
        loop {
            for &node in ask {
                match self.leader_seen_by(node, asset).await {
                    Some(leader) if Some(leader) != not => return (leader, started.elapsed()),
                    _ => {}
                }
            }
            assert!(
                started.elapsed() < bound,
                "no node of {ask:?} named a leader of {asset} (other than {not:?}) in {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.kill9(node);
        }
    }
}

/// A node's configuration file: JetStream with every write synced (DESIGN.md: a cluster runs
/// `sync_interval: always`), routes to every node (a node skips its own), and pings every two
/// seconds so that a node or client behind a partition is dropped in seconds, not minutes.
fn node_config(
    name: &str,
    host: &str,
    (client, route, monitor): (u16, u16, u16),
    store: &Path,
    routes: &[String],
) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "server_name: {name}");
    let _ = writeln!(text, "listen: \"{host}:{client}\"");
    let _ = writeln!(text, "http: \"{host}:{monitor}\"");
    let _ = writeln!(text, "ping_interval: \"2s\"");
    let _ = writeln!(text, "ping_max: 2");
    let _ = writeln!(
        text,
        "jetstream {{ store_dir: {:?}, sync_interval: always }}",
        store.display().to_string()
    );
    let _ = writeln!(
        text,
        "cluster {{ name: ha, listen: \"{host}:{route}\", routes: [{}] }}",
        routes.join(", ")
    );
    text
}

/// The leader's server name of `asset` in a `/jsz?streams=true&consumers=true` answer.
fn leader_in_jsz<'a>(jsz: &'a Value, asset: &Asset) -> Option<&'a str> {
    let stream_name = match asset {
        Asset::Stream(stream) | Asset::Consumer(stream, _) => stream,
    };
    let stream = jsz["account_details"]
        .as_array()?
        .iter()
        .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
        .find(|stream| stream["name"] == stream_name.as_str())?;
    let detail = match asset {
        Asset::Stream(_) => stream,
        Asset::Consumer(_, name) => stream["consumer_detail"]
            .as_array()?
            .iter()
            .find(|consumer| consumer["name"] == name.as_str())?,
    };
    detail["cluster"]["leader"]
        .as_str()
        .filter(|leader| !leader.is_empty())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn versions_are_read_from_what_the_server_prints() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15, 1)));
        assert_eq!(parse_version("nats-server: v2.12.3-RC.1"), Some((2, 12, 3)));
        assert_eq!(parse_version("nats-server version 2"), None);
        assert!(parse_version("nats-server: v2.9.20") < Some(MIN_CLUSTER_SERVER));
    }

    #[test]
    fn leaders_are_found_in_the_monitoring_answer() {
        let jsz = json!({ "account_details": [{ "stream_detail": [
            { "name": "other", "cluster": { "leader": "n3" } },
            { "name": "s", "cluster": { "leader": "n1" }, "consumer_detail": [
                { "name": "c", "cluster": { "leader": "n2" } },
                { "name": "d", "cluster": { "leader": "" } },
            ]},
        ]}]});
        let stream = |s: &str| Asset::Stream(s.to_owned());
        let consumer = |c: &str| Asset::Consumer("s".to_owned(), c.to_owned());
        assert_eq!(leader_in_jsz(&jsz, &stream("s")), Some("n1"));
        assert_eq!(leader_in_jsz(&jsz, &consumer("c")), Some("n2"));
        assert_eq!(leader_in_jsz(&jsz, &consumer("d")), None);
        assert_eq!(leader_in_jsz(&jsz, &stream("missing")), None);
        assert_eq!(leader_in_jsz(&json!({}), &stream("s")), None);
    }
}
