//! Which processes run which binary. The kernel says when a process exec'd
//! or ended ([`ProcScan::exec`], [`ProcScan::exit`]); a scan of `/proc`
//! ([`ProcScan::scan`]) finds what ran before the agent started and is
//! repeated, slowly, for anything those events missed.
//!
//! A process is identified by pid, start time and the binary it runs
//! (device + inode of `/proc/PID/exe`), so a pid reused or an exec between
//! two scans is seen as one process ending and another starting. Each entry
//! remembers when it was read (CLOCK_MONOTONIC, the clock of the kernel's
//! event timestamps), so that an event older than what `/proc` already
//! showed changes nothing.
//!
//! A binary no process has run for a while is reported [`Change::Unused`],
//! so that what was read from it can go: memory stays bounded under churn,
//! and a binary run over and over (a cron job, a CLI) is read once.

use crate::kernel::clock::monotonic_ns;

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    time::{Duration, Instant},
};

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

#[derive(Debug, Clone, Copy)]
struct Known {
    identity: Identity,
    /// CLOCK_MONOTONIC ns just before `/proc` was read for it.
    seen_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `exec_ns`: when the kernel reported its exec, if it did.
    Started {
        pid: u32,
        binary: BinaryId,
        exec_ns: Option<u64>,
    },
    Exited {
        pid: u32,
        binary: BinaryId,
    },
    /// No process has run `binary` for the idle time asked for.
    Unused {
        binary: BinaryId,
    },
}

#[derive(Default)]
pub struct ProcScan {
    known: HashMap<u32, Known>,
    /// Processes per binary.
    users: HashMap<BinaryId, usize>,
    /// Binaries whose last process ended, and when.
    idle: HashMap<BinaryId, Instant>,
}

impl ProcScan {
    /// Compares `/proc` now with what is known. Kernel threads and processes
    /// whose executable cannot be read are skipped.
    pub fn scan(&mut self, changes: &mut Vec<Change>) {
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        let mut now = HashMap::with_capacity(self.known.len());
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let seen_ns = monotonic_ns();
            if let Some(identity) = identity(pid) {
                now.insert(pid, Known { identity, seen_ns });
            }
        }
        let ended: Vec<u32> = self
            .known
            .iter()
            .filter(|(pid, old)| now.get(pid).map(|k| k.identity) != Some(old.identity))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in ended {
            self.remove(pid, changes);
        }
        for (pid, new) in now {
            // Unchanged ones keep their first reading: an exec event after
            // it (the same binary exec'd again) still counts.
            if !self.known.contains_key(&pid) {
                self.insert(pid, new, None, changes);
            }
        }
    }

    /// `pid` exec'd at `exec_ns`: whatever it ran before ended, what
    /// `/proc/PID/exe` is now started (unless a scan read it after the exec).
    pub fn exec(&mut self, pid: u32, exec_ns: u64, changes: &mut Vec<Change>) {
        let seen_ns = monotonic_ns();
        let current = identity(pid);
        if let (Some(old), Some(now)) = (self.known.get(&pid), current)
            && old.identity == now
            && old.seen_ns > exec_ns
        {
            return;
        }
        self.remove(pid, changes);
        if let Some(identity) = current {
            self.insert(pid, Known { identity, seen_ns }, Some(exec_ns), changes);
        }
    }

    /// The leader of `pid` exited at `exit_ns`. An entry read after that
    /// is a later process with the same pid (or, rarely, this one read while
    /// exiting: the next scan ends it).
    pub fn exit(&mut self, pid: u32, exit_ns: u64, changes: &mut Vec<Change>) {
        if self.known.get(&pid).is_some_and(|k| k.seen_ns < exit_ns) {
            self.remove(pid, changes);
        }
    }

    /// Reports binaries no process has run for `idle_for` (once each).
    pub fn unused(&mut self, idle_for: Duration, changes: &mut Vec<Change>) {
        self.idle.retain(|&binary, since| {
            let keep = since.elapsed() < idle_for;
            if !keep {
                changes.push(Change::Unused { binary });
            }
            keep
        });
    }

    fn insert(&mut self, pid: u32, known: Known, exec_ns: Option<u64>, changes: &mut Vec<Change>) {
        let binary = known.identity.binary;
        *self.users.entry(binary).or_default() += 1;
        self.idle.remove(&binary);
        self.known.insert(pid, known);
        changes.push(Change::Started { pid, binary, exec_ns });
    }

    fn remove(&mut self, pid: u32, changes: &mut Vec<Change>) {
        let Some(old) = self.known.remove(&pid) else { return };
        let binary = old.identity.binary;
        if let Some(n) = self.users.get_mut(&binary) {
            *n -= 1;
            if *n == 0 {
                self.users.remove(&binary);
                self.idle.insert(binary, Instant::now());
            }
        }
        changes.push(Change::Exited { pid, binary });
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
/// (start address, file offset) of its first mapping of `binary`. Found by
/// inode; failing that (an overlay filesystem shows the inode of the file
/// beneath), by the path `/proc/PID/exe` names.
pub fn first_mapping(pid: u32, binary: BinaryId) -> Option<(u64, u64)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mappings: Vec<Mapping> = maps.lines().filter_map(Mapping::parse).collect();
    let by_inode = mappings.iter().find(|m| m.inode == binary.ino);
    let by_path = || {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let exe = exe.to_str()?;
        mappings.iter().find(|m| m.path == exe)
    };
    by_inode.or_else(by_path).map(|m| (m.start, m.offset))
}

/// One line of `/proc/PID/maps`.
struct Mapping<'a> {
    start: u64,
    offset: u64,
    inode: u64,
    /// Path as shown, `" (deleted)"` included.
    path: &'a str,
}

impl<'a> Mapping<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let mut f = line.splitn(6, ' ');
        let range = f.next()?;
        let _perms = f.next()?;
        let offset = u64::from_str_radix(f.next()?, 16).ok()?;
        let _dev = f.next()?;
        let inode = f.next()?.parse().ok()?;
        let path = f.next().unwrap_or("").trim_start();
        let start = u64::from_str_radix(range.split('-').next()?, 16).ok()?;
        Some(Self { start, offset, inode, path })
    }
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

    fn started(changes: &[Change], me: u32) -> bool {
        changes.iter().any(|c| matches!(c, Change::Started { pid, .. } if *pid == me))
    }

    fn fake(scan: &mut ProcScan, pid: u32, seen_ns: u64) -> BinaryId {
        let binary = BinaryId { dev: 0, ino: u64::from(pid) };
        scan.insert(pid, Known { identity: Identity { start_time: 0, binary }, seen_ns }, None, &mut Vec::new());
        binary
    }

    #[test]
    fn own_process_is_found_and_its_end_reported() {
        let mut scan = ProcScan::default();
        let me = std::process::id();
        let mut first = Vec::new();
        scan.scan(&mut first);
        assert!(started(&first, me), "{first:?}");
        let mut again = Vec::new();
        scan.scan(&mut again);
        assert!(!started(&again, me), "{again:?}");
        let binary = fake(&mut scan, u32::MAX, 0);
        let mut ended = Vec::new();
        scan.scan(&mut ended);
        assert!(ended.contains(&Change::Exited { pid: u32::MAX, binary }), "{ended:?}");
    }

    #[test]
    fn an_exec_after_the_scan_restarts_the_process_an_older_one_does_not() {
        let mut scan = ProcScan::default();
        let me = std::process::id();
        scan.scan(&mut Vec::new());
        let mut changes = Vec::new();
        scan.exec(me, 0, &mut changes);
        assert!(changes.is_empty(), "the scan read it after this exec: {changes:?}");
        scan.exec(me, monotonic_ns(), &mut changes);
        assert!(
            matches!(changes[..], [Change::Exited { pid: a, .. }, Change::Started { pid: b, exec_ns: Some(_), .. }] if a == me && b == me),
            "{changes:?}"
        );
    }

    #[test]
    fn an_exit_ends_only_what_was_read_before_it() {
        let mut scan = ProcScan::default();
        let old = fake(&mut scan, u32::MAX, 100);
        let mut changes = Vec::new();
        scan.exit(u32::MAX, 50, &mut changes);
        assert!(changes.is_empty(), "read after that exit: a later process with the pid");
        scan.exit(u32::MAX, 150, &mut changes);
        assert_eq!(changes, vec![Change::Exited { pid: u32::MAX, binary: old }]);
        scan.exit(u32::MAX, 200, &mut changes);
        assert_eq!(changes.len(), 1, "ended once");
    }

    #[test]
    fn a_binary_is_unused_once_no_process_has_run_it_for_a_while() {
        let mut scan = ProcScan::default();
        let binary = BinaryId { dev: 1, ino: 2 };
        let run = |scan: &mut ProcScan, pid| {
            let identity = Identity { start_time: 0, binary };
            scan.insert(pid, Known { identity, seen_ns: 0 }, None, &mut Vec::new());
        };
        let unused = |scan: &mut ProcScan, idle_for| {
            let mut changes = Vec::new();
            scan.unused(idle_for, &mut changes);
            changes
        };
        run(&mut scan, u32::MAX - 1);
        run(&mut scan, u32::MAX);
        let mut changes = Vec::new();
        scan.exit(u32::MAX, 1, &mut changes);
        assert!(unused(&mut scan, Duration::ZERO).is_empty(), "still run by one process");
        scan.exit(u32::MAX - 1, 1, &mut changes);
        assert!(unused(&mut scan, Duration::from_secs(60)).is_empty(), "not idle long enough");
        run(&mut scan, u32::MAX);
        assert!(unused(&mut scan, Duration::ZERO).is_empty(), "run again");
        scan.exit(u32::MAX, 1, &mut changes);
        assert_eq!(unused(&mut scan, Duration::ZERO), vec![Change::Unused { binary }]);
        assert!(unused(&mut scan, Duration::ZERO).is_empty(), "reported once");
    }

    #[test]
    fn own_executable_is_mapped() {
        let meta = std::fs::metadata("/proc/self/exe").unwrap();
        let binary = BinaryId { dev: meta.dev(), ino: meta.ino() };
        assert!(first_mapping(std::process::id(), binary).is_some());
        // By path when the inode differs (an overlay filesystem).
        assert!(first_mapping(std::process::id(), BinaryId { dev: 0, ino: u64::MAX }).is_some());
    }

    #[test]
    fn maps_lines_with_and_without_paths() {
        let m = Mapping::parse("55d0c8a00000-55d0c8a2b000 r--p 00001000 fd:01 1234    /usr/bin/x (deleted)").unwrap();
        assert_eq!((m.start, m.offset, m.inode, m.path), (0x55d0c8a00000, 0x1000, 1234, "/usr/bin/x (deleted)"));
        let anon = Mapping::parse("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!((anon.inode, anon.path), (0, ""));
    }
}
