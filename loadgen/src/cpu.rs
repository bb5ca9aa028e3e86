//! Where the CPU went during a measurement, from `/proc` (Linux): each service process, every
//! `postgres` and `nats-server` process, the load generator (and its ceiling server), and the
//! rest of the machine, which on a shared machine is other people's work: the noise.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The group of the Postgres backends serving this run's databases for the services.
pub const POSTGRES_OURS: &str = "postgres (this run's databases)";
/// The backend the load generator's table probe queries on: it serves one of this run's
/// databases, but its work is the measurement's, not the system's.
pub const POSTGRES_PROBE: &str = "postgres (the probe)";
const POSTGRES_REST: &str = "postgres (other databases, background)";

/// `/proc` reports CPU times in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// Cumulative CPU ticks at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    /// Busy and stolen ticks of the whole machine.
    machine: MachineTicks,
    /// Each process's group name and ticks, by pid.
    processes: BTreeMap<u32, (String, u64)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    pub busy: u64,
    pub steal: u64,
}

/// Cores used on average over an interval (1.0 = one core fully busy).
#[derive(Debug, Clone)]
pub struct Usage {
    pub wall: Duration,
    pub machine_busy: f64,
    pub steal: f64,
    pub groups: Vec<(String, f64)>,
    /// Busy cores not in any group: other processes on the machine.
    pub other: f64,
}

/// Snapshots the machine, with `services` (name, pid) as groups of their own, and Postgres
/// backends of `databases` (this run's) apart from the rest of Postgres (other people's
/// databases on the shared server, and its background writers).
pub fn snapshot(services: &[(&str, u32)], databases: &[String]) -> Snapshot {
    let me = std::process::id();
    let mut processes = BTreeMap::new();
    for pid in all_pids() {
        let Some((comm, ticks)) = read_process(pid) else {
            continue;
        };
        let group = match services.iter().find(|(_, p)| *p == pid) {
            Some((name, _)) => name,
            None if pid == me || comm == "loadgen" => "loadgen (+ ceiling)",
            None if comm == "postgres" && serves(pid, databases) => POSTGRES_OURS,
            None if comm == "postgres" => POSTGRES_REST,
            None if comm == "nats-server" => "nats-server (all)",
            None => continue,
        };
        processes.insert(pid, (group.to_owned(), ticks));
    }
    let machine = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_machine(&s))
        .unwrap_or_default();
    Snapshot {
        at: Instant::now(),
        machine,
        processes,
    }
}

/// The usage between two snapshots, process by process: a process born in between counts all
/// its ticks; one that ended in between is lost (its time shows as `other`).
pub fn between(before: &Snapshot, after: &Snapshot) -> Usage {
    let wall = after.at.saturating_duration_since(before.at);
    let cores = |ticks: u64| {
        let secs = wall.as_secs_f64();
        if secs > 0.0 {
            ticks as f64 / TICKS_PER_SECOND / secs
        } else {
            0.0
        }
    };
    let mut ticks: BTreeMap<&str, u64> = BTreeMap::new();
    for (pid, (group, now)) in &after.processes {
        let was = before.processes.get(pid).map_or(0, |(_, t)| *t);
        *ticks.entry(group).or_default() += now.saturating_sub(was);
    }
    let groups: Vec<(String, f64)> = ticks
        .into_iter()
        .map(|(group, t)| (group.to_owned(), cores(t)))
        .collect();
    let machine_busy = cores(after.machine.busy.saturating_sub(before.machine.busy));
    let known: f64 = groups.iter().map(|(_, c)| c).sum();
    Usage {
        wall,
        machine_busy,
        steal: cores(after.machine.steal.saturating_sub(before.machine.steal)),
        other: (machine_busy - known).max(0.0),
        groups,
    }
}

impl Usage {
    /// Cores `group` used on average; zero when it did not run.
    pub fn cores(&self, group: &str) -> f64 {
        self.groups
            .iter()
            .find(|(name, _)| name == group)
            .map_or(0.0, |(_, cores)| *cores)
    }

    /// CPU time `group` used over the whole interval.
    pub fn cpu_time(&self, group: &str) -> Duration {
        Duration::from_secs_f64(self.cores(group) * self.wall.as_secs_f64())
    }

    pub fn line(&self) -> String {
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|(name, cores)| format!("{name} {cores:.2}"))
            .collect();
        format!(
            "cores used: {}, other processes {:.2}; machine busy {:.2}, stolen {:.2}",
            groups.join(", "),
            self.other,
            self.machine_busy,
            self.steal
        )
    }
}

/// Whether a Postgres backend serves one of `databases`: its command line reads
/// `postgres: <cluster>: <user> <database> <client> <state>`.
fn serves(pid: u32, databases: &[String]) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline
        .split_whitespace()
        .any(|word| databases.iter().any(|d| d == word))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The command name and user + system ticks of a process (all its threads).
fn read_process(pid: u32) -> Option<(String, u64)> {
    parse_process(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// From a `/proc/<pid>/stat` line: the name in parentheses, then utime and stime, fields 14
/// and 15 (counted after the name, which may hold spaces).
pub fn parse_process(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// From `/proc/stat`'s first line: busy (user, nice, system, irq, softirq) and steal ticks.
pub fn parse_machine(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some(MachineTicks {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        steal: at(7),
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_process_line_gives_its_name_and_cpu_ticks() {
        let stat = "22448 (order service) R 22444 22444 3427 0 -1 4194304 97 0 0 0 \
                    150 25 0 0 20 0 9 0 460111";
        assert_eq!(parse_process(stat), Some(("order service".into(), 175)));
        assert_eq!(parse_process("1 (x) S 0"), None);
    }

    #[test]
    fn the_machine_line_separates_busy_from_idle_and_stolen() {
        let stat = "cpu  408642 1 100968 382746 6222 3 8540 9479 0 0\ncpu0 1 2 3\n";
        assert_eq!(
            parse_machine(stat),
            Some(MachineTicks {
                busy: 408642 + 1 + 100968 + 3 + 8540,
                steal: 9479
            })
        );
    }

    #[test]
    fn usage_is_ticks_per_second_of_wall_time_and_the_rest_is_other() {
        let at = Instant::now();
        let snap = |secs: u64, busy: u64, processes: &[(u32, u64)]| Snapshot {
            at: at + Duration::from_secs(secs),
            machine: MachineTicks { busy, steal: 0 },
            processes: processes
                .iter()
                .map(|(pid, t)| (*pid, ("svc".to_owned(), *t)))
                .collect(),
        };
        // Process 1 runs throughout, 2 ends and 3 starts in between.
        let u = between(
            &snap(0, 1_000, &[(1, 100), (2, 500)]),
            &snap(2, 1_300, &[(1, 200), (3, 50)]),
        );
        assert_eq!(u.wall, Duration::from_secs(2));
        assert!((u.machine_busy - 1.5).abs() < 1e-9);
        assert_eq!(u.groups, vec![("svc".to_owned(), 0.75)]);
        assert!((u.other - 0.75).abs() < 1e-9);
        assert_eq!(u.cores("svc"), 0.75);
        assert_eq!(u.cpu_time("svc"), Duration::from_millis(1500));
        assert_eq!(u.cores("absent"), 0.0);
    }

    #[test]
    fn this_process_is_found_in_its_own_group() {
        let s = snapshot(&[], &[]);
        let me = &s.processes[&std::process::id()];
        assert_eq!(me.0, "loadgen (+ ceiling)");
    }
}
