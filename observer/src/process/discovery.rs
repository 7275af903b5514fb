//! Which processes run which binary: a scan of `/proc`, repeated by the
//! caller, reporting processes that appeared (or exec'd) and that ended.
//!
//! A process is identified by pid, start time and the binary it runs
//! (device + inode of `/proc/PID/exe`), so a pid reused or an exec between
//! two scans is seen as one process ending and another starting.
//! TODO(issue 4): follow `sched:sched_process_exec/exit` from the kernel
//! instead of polling, so a new process is attached before it runs much.

use std::{collections::HashMap, os::unix::fs::MetadataExt};

/// A binary on disk: what processes running the same executable share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BinaryId {
    pub dev: u64,
    pub ino: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    start_time: u64,
    binary: BinaryId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Started { pid: u32, binary: BinaryId },
    Exited { pid: u32 },
}

#[derive(Default)]
pub struct ProcScan {
    known: HashMap<u32, Identity>,
}

impl ProcScan {
    /// Compares `/proc` now with the last scan. Kernel threads and processes
    /// whose executable cannot be read are skipped.
    pub fn scan(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut now = HashMap::with_capacity(self.known.len());
        let Ok(entries) = std::fs::read_dir("/proc") else { return changes };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Some(identity) = identity(pid) {
                now.insert(pid, identity);
            }
        }
        for (pid, old) in &self.known {
            if now.get(pid) != Some(old) {
                changes.push(Change::Exited { pid: *pid });
            }
        }
        for (pid, new) in &now {
            if self.known.get(pid) != Some(new) {
                changes.push(Change::Started { pid: *pid, binary: new.binary });
            }
        }
        self.known = now;
        changes
    }
}

fn identity(pid: u32) -> Option<Identity> {
    // Follows the magic link: works across mount namespaces and for deleted files.
    let meta = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(Identity { start_time: start_time(&stat)?, binary: BinaryId { dev: meta.dev(), ino: meta.ino() } })
}

/// Field 22 of `/proc/PID/stat`; the comm before it may hold spaces and ')'.
fn start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Where the executable's mapping of some file offset starts in a process:
/// (start address, file offset) of its first mapping of `binary`.
pub fn first_mapping(pid: u32, binary: BinaryId) -> Option<(u64, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let range = f.next()?;
        let _perms = f.next()?;
        let offset = u64::from_str_radix(f.next()?, 16).ok()?;
        let _dev = f.next()?;
        let inode: u64 = f.next()?.parse().ok()?;
        if inode != binary.ino {
            return None;
        }
        let start = u64::from_str_radix(range.split('-').next()?, 16).ok()?;
        Some((start, offset))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_comms() {
        let rest = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 19 20";
        assert_eq!(start_time(&format!("42 (go) {rest}")), Some(424242));
        assert_eq!(start_time(&format!("42 (a) b) c) {rest}")), Some(424242));
        assert_eq!(start_time("42 (go) S 1"), None);
    }

    #[test]
    fn own_process_is_found_and_its_end_reported() {
        let mut scan = ProcScan::default();
        let me = std::process::id();
        let first = scan.scan();
        assert!(first.iter().any(|c| matches!(c, Change::Started { pid, .. } if *pid == me)), "{first:?}");
        assert!(scan.scan().iter().all(|c| !matches!(c, Change::Started { pid, .. } if *pid == me)));
        scan.known.insert(u32::MAX, Identity { start_time: 0, binary: BinaryId { dev: 0, ino: 0 } });
        assert!(scan.scan().contains(&Change::Exited { pid: u32::MAX }));
    }

    #[test]
    fn own_executable_is_mapped() {
        let meta = std::fs::metadata("/proc/self/exe").unwrap();
        let binary = BinaryId { dev: meta.dev(), ino: meta.ino() };
        assert!(first_mapping(std::process::id(), binary).is_some());
    }
}
