//! The cluster panel: which NATS nodes are up, which one the viewer is connected to, and which
//! node leads each service stream, with its replicas' state.
//!
//! Two sources, both open to the viewer's NATS user (docker/nats.conf):
//! - each URL of `NATS_URL` is probed: a TCP connection on which the server sends its `INFO`
//!   line (name, cluster) before any login; answering is being up. No `$SYS` account needed;
//! - `$JS.API.STREAM.INFO.<stream>` for each service stream: its leader and replicas
//!   (current, lagging, offline), as the stream's RAFT group sees them.
//!
//! [`assemble`] merges them (pure, tested below); [`run`] observes every [`EVERY`] and hands
//! the result to the hub.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream::ClusterInfo};
use async_nats::{ServerAddr, ServerInfo};
use serde::Serialize;
use tokio::io::AsyncBufReadExt as _;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::nats::now_ms;

pub const EVERY: Duration = Duration::from_secs(2);
/// A node that has not sent its `INFO` line within this counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A stream without a leader (mid-election) does not answer; the next round asks again.
const STREAM_INFO_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// `single node` (a server without a cluster) or `cluster`.
    pub mode: &'static str,
    pub cluster_name: Option<String>,
    /// The node the viewer's client is connected to; `None` while disconnected.
    pub connected_to: Option<String>,
    pub nodes: Vec<Node>,
    pub streams: Vec<StreamView>,
    pub checked_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    /// The `NATS_URL` entry it answers on; `None` for a node known only from a stream's replicas.
    pub url: Option<String>,
    pub up: bool,
    pub connected: bool,
    /// The streams it leads.
    pub leads: Vec<String>,
    /// Why it counts as down.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamView {
    pub service: &'static str,
    pub stream: String,
    pub leader: Option<String>,
    /// The other members of its RAFT group (none on a single node or for an R1 stream).
    pub replicas: Vec<Replica>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replica {
    pub name: String,
    pub state: ReplicaState,
    /// Operations behind the leader.
    pub lag: u64,
    /// Since the leader last heard from it.
    pub active_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    Current,
    Lagging,
    Offline,
}

/// One `NATS_URL` entry and what it answered: the server's `INFO`, or why nothing came.
#[derive(Debug, Clone)]
pub struct Probe {
    pub url: String,
    pub answer: Result<ServerInfo, String>,
}

/// One service stream and its cluster info, or why it could not be read.
#[derive(Debug, Clone)]
pub struct StreamObservation {
    pub service: &'static str,
    pub stream: String,
    pub cluster: Result<Option<ClusterInfo>, String>,
}

/// The server's name in an `INFO`; its id when it has no name (servers before 2.2).
fn name_of(info: &ServerInfo) -> String {
    if info.server_name.is_empty() {
        info.server_id.clone()
    } else {
        info.server_name.clone()
    }
}

/// The first line a NATS server sends: `INFO {json}`.
pub fn parse_info(line: &str) -> Result<ServerInfo, String> {
    let json = line
        .trim()
        .strip_prefix("INFO ")
        .ok_or_else(|| format!("not a NATS server (it sent {:.40?})", line.trim()))?;
    serde_json::from_str(json).map_err(|e| format!("unreadable INFO: {e}"))
}

/// Merges one round of observations. `known` maps URLs to the names they answered with
/// before, so that a node that stopped answering keeps its name.
pub fn assemble(
    probes: &[Probe],
    known: &HashMap<String, String>,
    connected: Option<&ServerInfo>,
    streams: &[StreamObservation],
) -> ClusterView {
    let connected_to = connected.map(name_of);
    let cluster_name = connected
        .and_then(|i| i.cluster.clone())
        .or_else(|| {
            probes
                .iter()
                .find_map(|p| p.answer.as_ref().ok().and_then(|i| i.cluster.clone()))
        })
        .or_else(|| {
            streams.iter().find_map(|s| {
                s.cluster
                    .as_ref()
                    .ok()
                    .and_then(|c| c.as_ref()?.name.clone())
            })
        });
    let single = cluster_name.is_none();

    // Probes decide first: they see the node itself. Then what the streams say of the others.
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for probe in probes {
        let (name, up, error) = match &probe.answer {
            Ok(info) => (name_of(info), true, None),
            Err(e) => {
                let name = known.get(&probe.url).unwrap_or(&probe.url).clone();
                (name, false, Some(e.clone()))
            }
        };
        let node = nodes.entry(name.clone()).or_insert_with(|| Node {
            name,
            url: Some(probe.url.clone()),
            up,
            connected: false,
            leads: Vec::new(),
            error: error.clone(),
        });
        // Two URLs of one node (a name and an address): up if either answers.
        if up && !node.up {
            node.up = true;
            node.error = None;
        }
    }
    if let Some(name) = &connected_to {
        node(&mut nodes, name, true).connected = true;
    }
    for observed in streams {
        let Ok(Some(cluster)) = &observed.cluster else {
            continue;
        };
        if let Some(leader) = &cluster.leader {
            node(&mut nodes, leader, true)
                .leads
                .push(observed.stream.clone());
        }
        for replica in &cluster.replicas {
            node(&mut nodes, &replica.name, !replica.offline);
        }
    }

    let streams = streams
        .iter()
        .map(|observed| {
            let (cluster, error) = match &observed.cluster {
                Ok(cluster) => (cluster.as_ref(), None),
                Err(e) => (None, Some(e.clone())),
            };
            let mut leader = cluster.and_then(|c| c.leader.clone());
            if leader.is_none() && single && error.is_none() {
                // A server without a cluster leads all its streams.
                leader = connected_to.clone();
            }
            let replicas = cluster
                .map(|c| c.replicas.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    let node_up = nodes.get(&r.name).is_none_or(|n| n.up);
                    Replica {
                        name: r.name.clone(),
                        state: if r.offline || !node_up {
                            ReplicaState::Offline
                        } else if r.current {
                            ReplicaState::Current
                        } else {
                            ReplicaState::Lagging
                        },
                        lag: r.lag.unwrap_or(0),
                        active_ms: u64::try_from(r.active.as_millis()).unwrap_or(u64::MAX),
                    }
                })
                .collect();
            StreamView {
                service: observed.service,
                stream: observed.stream.clone(),
                leader,
                replicas,
                error,
            }
        })
        .collect::<Vec<_>>();
    if single {
        if let Some(name) = &connected_to {
            if let Some(node) = nodes.get_mut(name) {
                node.leads = streams
                    .iter()
                    .filter(|s| s.leader.as_deref() == Some(name))
                    .map(|s| s.stream.clone())
                    .collect();
            }
        }
    }

    ClusterView {
        mode: if single { "single node" } else { "cluster" },
        cluster_name,
        connected_to,
        nodes: nodes.into_values().collect(),
        streams,
        checked_ms: now_ms(),
    }
}

/// The node named `name`, added (as `up`) when it was not known yet.
fn node<'a>(nodes: &'a mut BTreeMap<String, Node>, name: &str, up: bool) -> &'a mut Node {
    nodes.entry(name.to_owned()).or_insert_with(|| Node {
        name: name.to_owned(),
        url: None,
        up,
        connected: false,
        leads: Vec::new(),
        error: (!up).then(|| "offline for its stream's group".to_owned()),
    })
}

/// Observes the nodes of `urls` and the `streams` (service, stream name) every [`EVERY`].
pub async fn run(
    urls: Vec<ServerAddr>,
    streams: Vec<(&'static str, String)>,
    client: async_nats::Client,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let js = jetstream::new(client.clone());
    let mut known = HashMap::new();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let probes = futures::future::join_all(urls.iter().map(probe)).await;
        for p in &probes {
            if let Ok(info) = &p.answer {
                known.insert(p.url.clone(), name_of(info));
            }
        }
        let connected = (client.connection_state() == async_nats::connection::State::Connected)
            .then(|| client.server_info());
        let observed = futures::future::join_all(streams.iter().map(|(service, stream)| {
            let js = &js;
            async move {
                StreamObservation {
                    service,
                    stream: stream.clone(),
                    cluster: stream_cluster(js, stream).await,
                }
            }
        }))
        .await;
        hub.set_cluster(assemble(&probes, &known, connected.as_ref(), &observed));
    }
}

async fn stream_cluster(
    js: &jetstream::Context,
    stream: &str,
) -> Result<Option<ClusterInfo>, String> {
    match tokio::time::timeout(STREAM_INFO_TIMEOUT, js.get_stream(stream)).await {
        Ok(Ok(stream)) => Ok(stream.cached_info().cluster.clone()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer (no leader?)".to_owned()),
    }
}

/// Reads the `INFO` line a server sends on connection, then hangs up.
async fn probe(addr: &ServerAddr) -> Probe {
    let url = addr.as_url_str().trim_end_matches('/').to_owned();
    let answer = if addr.is_websocket() {
        Err("websocket URL: not probed".to_owned())
    } else {
        let read = async {
            let socket = tokio::net::TcpStream::connect((addr.host(), addr.port()))
                .await
                .map_err(|e| e.to_string())?;
            let mut line = String::new();
            tokio::io::BufReader::new(socket)
                .read_line(&mut line)
                .await
                .map_err(|e| e.to_string())?;
            parse_info(&line)
        };
        tokio::time::timeout(PROBE_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| Err("no INFO within 1 s".to_owned()))
    };
    Probe { url, answer }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::stream::PeerInfo;

    use super::*;

    fn info(name: &str, cluster: Option<&str>) -> ServerInfo {
        ServerInfo {
            server_name: name.to_owned(),
            cluster: cluster.map(str::to_owned),
            ..ServerInfo::default()
        }
    }

    fn up(url: &str, name: &str) -> Probe {
        Probe {
            url: url.to_owned(),
            answer: Ok(info(name, Some("c1"))),
        }
    }

    fn down(url: &str) -> Probe {
        Probe {
            url: url.to_owned(),
            answer: Err("connection refused".to_owned()),
        }
    }

    fn peer(name: &str, current: bool, offline: bool) -> PeerInfo {
        PeerInfo {
            name: name.to_owned(),
            current,
            active: Duration::from_millis(300),
            offline,
            lag: Some(0),
        }
    }

    fn stream(name: &str, leader: Option<&str>, replicas: Vec<PeerInfo>) -> StreamObservation {
        StreamObservation {
            service: "orders",
            stream: name.to_owned(),
            cluster: Ok(Some(ClusterInfo {
                name: Some("c1".to_owned()),
                leader: leader.map(str::to_owned),
                replicas,
                ..ClusterInfo::default()
            })),
        }
    }

    #[test]
    fn the_info_line_gives_the_name_and_the_cluster() {
        let line = r#"INFO {"server_id":"NDW","server_name":"n1","version":"2.15.1","cluster":"c1","jetstream":true}"#;
        let parsed = parse_info(&format!("{line} \r\n")).expect("parses");
        assert_eq!(name_of(&parsed), "n1");
        assert_eq!(parsed.cluster.as_deref(), Some("c1"));
        // Servers before 2.2 have no name: the id stands in.
        assert_eq!(
            name_of(&parse_info(r#"INFO {"server_id":"NB6"}"#).expect("parses")),
            "NB6"
        );
        assert!(parse_info("HTTP/1.1 400 Bad Request").is_err());
        assert!(parse_info("INFO {").is_err());
    }

    #[test]
    fn a_single_server_is_one_node_leading_every_stream() {
        let solo = info("solo", None);
        let streams = [
            StreamObservation {
                service: "orders",
                stream: "shop_order_events".to_owned(),
                cluster: Ok(Some(ClusterInfo {
                    leader: Some("solo".to_owned()),
                    ..ClusterInfo::default()
                })),
            },
            // Older servers leave the leader out.
            StreamObservation {
                service: "products",
                stream: "shop_product_events".to_owned(),
                cluster: Ok(None),
            },
        ];
        let probes = [Probe {
            url: "nats://127.0.0.1:4222".to_owned(),
            answer: Ok(solo.clone()),
        }];
        let view = assemble(&probes, &HashMap::new(), Some(&solo), &streams);
        assert_eq!(view.mode, "single node");
        assert_eq!(view.connected_to.as_deref(), Some("solo"));
        assert_eq!(view.nodes.len(), 1);
        let node = &view.nodes[0];
        assert!(node.up && node.connected);
        assert_eq!(node.leads, ["shop_order_events", "shop_product_events"]);
        assert!(view
            .streams
            .iter()
            .all(|s| s.leader.as_deref() == Some("solo") && s.replicas.is_empty()));
    }

    #[test]
    fn a_dead_leader_is_down_and_its_replica_offline_under_the_name_it_had() {
        let known = HashMap::from([("nats://h:1".to_owned(), "n1".to_owned())]);
        let probes = [
            down("nats://h:1"),
            up("nats://h:2", "n2"),
            up("nats://h:3", "n3"),
        ];
        // n1 led; n2 now leads, and the group has not yet noticed n1 is gone.
        let streams = [stream(
            "shop_order_events",
            Some("n2"),
            vec![peer("n1", true, false), peer("n3", false, false)],
        )];
        let view = assemble(&probes, &known, Some(&info("n3", Some("c1"))), &streams);
        assert_eq!(view.mode, "cluster");
        assert_eq!(view.cluster_name.as_deref(), Some("c1"));
        let states: Vec<_> = view
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.up, n.connected, n.leads.len()))
            .collect();
        assert_eq!(
            states,
            [
                ("n1", false, false, 0),
                ("n2", true, false, 1),
                ("n3", true, true, 0)
            ]
        );
        let replicas: Vec<_> = view.streams[0]
            .replicas
            .iter()
            .map(|r| (r.name.as_str(), r.state))
            .collect();
        assert_eq!(
            replicas,
            [("n1", ReplicaState::Offline), ("n3", ReplicaState::Lagging)]
        );
    }

    #[test]
    fn nodes_outside_nats_url_come_from_the_replicas() {
        let probes = [up("nats://h:1", "n1")];
        let streams = [
            stream(
                "a",
                Some("n1"),
                vec![peer("n2", true, false), peer("n3", false, true)],
            ),
            StreamObservation {
                service: "products",
                stream: "b".to_owned(),
                cluster: Err("stream not found".to_owned()),
            },
        ];
        let view = assemble(&probes, &HashMap::new(), None, &streams);
        assert_eq!(view.connected_to, None);
        let nodes: Vec<_> = view
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.up, n.url.is_some()))
            .collect();
        assert_eq!(
            nodes,
            [
                ("n1", true, true),
                ("n2", true, false),
                ("n3", false, false)
            ]
        );
        assert_eq!(view.streams[1].leader, None);
        assert_eq!(view.streams[1].error.as_deref(), Some("stream not found"));
    }
}
