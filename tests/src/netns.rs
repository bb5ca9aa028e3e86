//! Network partitions for the HA tests (tests/tests/faults_partition.rs): one network
//! namespace per NATS node, each with a veth pair into a bridge in the test's own namespace,
//! where the services and the test run and reach the nodes at the nodes' addresses. Cutting a
//! node off drops everything on its veth inside its namespace (iptables), so it loses the
//! other nodes and every client at once, without a connection being closed: packets simply
//! stop, as when a switch or a cable fails.
//!
//! Needs root (`ip netns`, `iptables`). Names and the subnet are unique per lab, and
//! everything is removed on drop (the namespaces take their veths with them).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The first two octets of every lab's subnet; the third tells labs apart.
const SUBNET: &str = "10.213";

/// A bridge and one network namespace per node, removed on drop.
pub struct NetLab {
    tag: String,
    subnet: String,
    nodes: usize,
}

impl NetLab {
    /// A lab of `nodes` namespaces, or why not (not root, no `ip` or `iptables`).
    pub fn create(nodes: usize) -> Result<NetLab, String> {
        for tool in ["ip", "iptables"] {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!("{tool} is not installed"));
            }
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let subnet = free_subnet()?;
        let lab = NetLab { tag, subnet, nodes };
        lab.build()?;
        Ok(lab)
    }

    fn bridge(&self) -> String {
        format!("hab{}", self.tag)
    }

    /// The network namespace `node` runs in.
    pub fn netns(&self, node: usize) -> String {
        format!("ha-{}-n{}", self.tag, node + 1)
    }

    fn veth(&self, node: usize) -> String {
        format!("hav{}n{}", self.tag, node + 1)
    }

    /// The address of `node`, reachable from the test's namespace.
    pub fn host(&self, node: usize) -> String {
        format!("{}.{}", self.subnet, node + 1)
    }

    /// Where each node runs, for [`crate::cluster::NatsCluster::start`].
    pub fn placements(&self) -> Vec<crate::cluster::Placement> {
        (0..self.nodes)
            .map(|node| crate::cluster::Placement {
                host: self.host(node),
                netns: Some(self.netns(node)),
            })
            .collect()
    }

    fn build(&self) -> Result<(), String> {
        let bridge = self.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}.254/24", self.subnet),
                "dev",
                &bridge,
            ],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        // Hosts where Docker runs drop forwarded traffic by default, and bridged frames pass
        // through the FORWARD chain (br_netfilter): let the lab's node-to-node traffic through.
        run("iptables", &forward_rule("-I", &bridge))?;
        for node in 0..self.nodes {
            let (netns, veth) = (self.netns(node), self.veth(node));
            run("ip", &["netns", "add", &netns])?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &bridge])?;
            run("ip", &["link", "set", &veth, "up"])?;
            let address = format!("{}/24", self.host(node));
            in_netns(&netns, &["ip", "addr", "add", &address, "dev", "eth0"])?;
            in_netns(&netns, &["ip", "link", "set", "eth0", "up"])?;
            in_netns(&netns, &["ip", "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Cuts `node` off from the other nodes and from everything in the test's namespace.
    pub fn cut(&self, node: usize) {
        let netns = self.netns(node);
        for rule in [
            ["iptables", "-A", "INPUT", "-i", "eth0", "-j", "DROP"],
            ["iptables", "-A", "OUTPUT", "-o", "eth0", "-j", "DROP"],
        ] {
            in_netns(&netns, &rule).expect("cutting a node off");
        }
    }

    /// Lets `node`'s traffic through again.
    pub fn heal(&self, node: usize) {
        let netns = self.netns(node);
        for chain in ["INPUT", "OUTPUT"] {
            in_netns(&netns, &["iptables", "-F", chain]).expect("healing a partition");
        }
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for node in 0..self.nodes {
            let _ = run("ip", &["netns", "del", &self.netns(node)]);
        }
        let _ = run("iptables", &forward_rule("-D", &self.bridge()));
        let _ = run("ip", &["link", "del", &self.bridge()]);
    }
}

fn forward_rule<'a>(action: &'a str, bridge: &'a str) -> [&'a str; 8] {
    [
        action, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
    ]
}

/// A /24 under [`SUBNET`] that no interface of this namespace uses yet.
fn free_subnet() -> Result<String, String> {
    let output = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map_err(|e| format!("ip addr: {e}"))?;
    let used = String::from_utf8_lossy(&output.stdout).into_owned();
    let start = std::process::id() % 200;
    (0..200)
        .map(|i| format!("{SUBNET}.{}", 20 + (start + i) % 200))
        .find(|subnet| !used.contains(&format!("{subnet}.")))
        .ok_or_else(|| format!("no free subnet under {SUBNET}"))
}

fn in_netns(netns: &str, command: &[&str]) -> Result<(), String> {
    let mut args = vec!["netns", "exec", netns];
    args.extend_from_slice(command);
    run("ip", &args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
