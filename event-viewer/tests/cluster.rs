//! The cluster panel's data against a private three-node cluster of nats-server processes
//! (private ports, a store each in a temporary directory, routes between them): `/api/cluster`
//! names the leader of an R3 stream; after that leader is killed (SIGKILL) it reports the node
//! down and another leader.
//!
//! Needs `NATS_CLUSTER_SERVER_BIN`, a nats-server >= 2.12.3. Unset: the test says it is skipped
//! and passes, unless `HA_TESTS_REQUIRED=1`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use clap::Parser;
use event_viewer::{app::Application, config::Config};
use serde_json::Value;

const MIN_VERSION: (u64, u64, u64) = (2, 12, 3);

/// The cluster's processes and their directory, killed and removed on drop.
struct Cluster {
    dir: PathBuf,
    nodes: Vec<(String, u16, Child)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, _, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    fn start(bin: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "viewer-cluster-{}-{}",
            std::process::id(),
            event_viewer::nats::now_ms()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let mut cluster = Cluster {
            dir: dir.clone(),
            nodes: Vec::new(),
        };
        for (i, (client, route)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let config = dir.join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\n\
                     jetstream {{ store_dir: {:?} }}\n\
                     cluster {{ name: viewer-test, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                    dir.join(&name),
                    routes.join(", ")
                ),
            )
            .expect("a config file");
            let child = Command::new(bin)
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(if std::env::var_os("TEST_LOG").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
            cluster.nodes.push((name, *client, child));
        }
        cluster
    }

    fn urls(&self) -> String {
        let urls: Vec<_> = self
            .nodes
            .iter()
            .map(|(_, port, _)| format!("nats://127.0.0.1:{port}"))
            .collect();
        urls.join(",")
    }

    fn kill(&mut self, name: &str) {
        let (_, _, child) = self
            .nodes
            .iter_mut()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no node {name}"));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The server binary to run, or `None` (skip) when the environment names none.
fn server_bin() -> Option<String> {
    let Ok(bin) = std::env::var("NATS_CLUSTER_SERVER_BIN") else {
        assert!(
            std::env::var("HA_TESTS_REQUIRED").as_deref() != Ok("1"),
            "HA_TESTS_REQUIRED=1 but NATS_CLUSTER_SERVER_BIN is not set"
        );
        println!("skipped: set NATS_CLUSTER_SERVER_BIN to a nats-server >= 2.12.3 to run it");
        return None;
    };
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{bin} --version: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let version: Vec<u64> = text
        .trim()
        .rsplit('v')
        .next()
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    let version = (
        version.first().copied().unwrap_or(0),
        version.get(1).copied().unwrap_or(0),
        version.get(2).copied().unwrap_or(0),
    );
    assert!(
        version >= MIN_VERSION,
        "{bin} is {}: the cluster test needs >= 2.12.3",
        text.trim()
    );
    Some(bin)
}

async fn eventually(url: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = match reqwest::get(url).await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {body:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn node<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view["nodes"].as_array()?.iter().find(|n| n["name"] == name)
}

fn orders_stream(view: &Value) -> &Value {
    &view["streams"][0]
}

#[actix_web::test]
async fn the_cluster_panel_names_the_leader_and_a_new_one_after_the_leader_is_killed() {
    let Some(bin) = server_bin() else { return };
    let mut cluster = Cluster::start(&bin);
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(
            cluster
                .urls()
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
        .await
        .expect("a client");
    let js = jetstream::new(client);
    // The cluster elects its JetStream meta leader first; until then creating fails.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, subjects) in [
        ("shop_order_events", "shop.order.events.>"),
        ("shop_product_events", "shop.product.events.>"),
    ] {
        loop {
            let created = js
                .get_or_create_stream(stream::Config {
                    name: name.to_owned(),
                    subjects: vec![subjects.to_owned()],
                    num_replicas: 3,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => break,
                Err(e) => {
                    assert!(Instant::now() < deadline, "stream {name}: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    let config = Config::parse_from([
        "event-viewer",
        "--nats-url",
        &cluster.urls(),
        "--events-namespace",
        "shop",
        "--orders-url",
        "http://127.0.0.1:9",
        "--products-url",
        "http://127.0.0.1:9",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    let app = Application::build(config).await.expect("viewer starts");
    let api = format!("http://127.0.0.1:{}/api/cluster", app.port());
    let server = actix_web::rt::spawn(app.run_until_stopped());

    let view = eventually(&api, "three nodes up and a leader", |v| {
        v["mode"] == "cluster"
            && v["nodes"].as_array().is_some_and(|n| {
                n.len() == 3
                    && n.iter().all(|n| n["up"] == true)
                    && n.iter().any(|n| n["connected"] == true)
            })
            && orders_stream(v)["leader"].is_string()
            && orders_stream(v)["replicas"]
                .as_array()
                .is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["state"] == "current"))
    })
    .await;
    assert_eq!(view["cluster_name"], "viewer-test");
    let leader = orders_stream(&view)["leader"]
        .as_str()
        .expect("a leader")
        .to_owned();
    let leads = &node(&view, &leader).expect("the leader is a node")["leads"];
    assert!(
        leads
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s == "shop_order_events")),
        "{view:#}"
    );
    println!("leader of shop_order_events: {leader}");

    let killed = Instant::now();
    cluster.kill(&leader);
    let view = eventually(&api, "the old leader down and a new leader", |v| {
        let new_leader = orders_stream(v)["leader"].as_str();
        node(v, &leader).is_some_and(|n| n["up"] == false)
            && new_leader.is_some_and(|l| l != leader)
            && orders_stream(v)["replicas"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|r| r["name"] == leader.as_str() && r["state"] == "offline")
            })
    })
    .await;
    let new_leader = orders_stream(&view)["leader"].as_str().unwrap_or_default();
    println!(
        "after killing {leader}: new leader {new_leader}, shown {} ms later; connected to {}",
        killed.elapsed().as_millis(),
        view["connected_to"]
    );
    println!("replicas as shown: {}", orders_stream(&view)["replicas"]);
    assert!(
        node(&view, new_leader).is_some_and(|n| n["up"] == true),
        "{view:#}"
    );

    server.abort();
}
