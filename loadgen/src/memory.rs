//! Resident memory of a process, from `/proc/<pid>/status` (Linux): the current size (VmRSS)
//! and the kernel's own high-water mark (VmHWM), which catches peaks between any two samples.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Resident sizes in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resident {
    pub current_kib: u64,
    pub peak_kib: u64,
}

impl Resident {
    /// Reads the sizes of a running process; `None` once it has gone.
    pub fn of(pid: u32) -> Option<Resident> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        parse_status(&status)
    }
}

/// The `VmRSS` and `VmHWM` lines of a `/proc/<pid>/status` text.
pub fn parse_status(status: &str) -> Option<Resident> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some(Resident {
        current_kib: field("VmRSS")?,
        peak_kib: field("VmHWM")?,
    })
}

/// `1536` KiB as `1.5 MiB`.
pub fn mebibytes(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Samples a process every `every` until stopped, keeping the largest resident size seen.
/// (VmHWM already is the true peak; the samples show it was not a start-up blip.)
pub async fn sample_peak(pid: u32, every: Duration, stop: Stop) -> u64 {
    let mut largest = 0;
    let mut next = Instant::now();
    while !stop.is_set() {
        if let Some(r) = Resident::of(pid) {
            largest = largest.max(r.current_kib);
        }
        next += every;
        tokio::time::sleep_until(next).await;
    }
    largest
}

/// A flag that tells samplers to finish.
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    const STATUS: &str = "Name:\torder-service\nVmPeak:\t  900000 kB\nVmSize:\t  800000 kB\n\
        VmHWM:\t   52344 kB\nVmRSS:\t   40960 kB\nThreads:\t9\n";

    #[test]
    fn the_status_file_gives_current_and_peak_resident_sizes() {
        assert_eq!(
            parse_status(STATUS),
            Some(Resident {
                current_kib: 40960,
                peak_kib: 52344
            })
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
        assert_eq!(mebibytes(40960), "40.0 MiB");
    }

    #[test]
    fn this_process_has_a_resident_size() {
        let me = Resident::of(std::process::id()).unwrap();
        assert!(me.current_kib > 0 && me.peak_kib >= me.current_kib);
    }
}
