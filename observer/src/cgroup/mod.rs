//! cgroup v2 ids → paths. The kernel reports a cgroup by id (its directory's
//! inode in the cgroup2 mount); people want the path.

pub mod container;

use crate::event::{Attribution, CgroupSource, Workload};

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::{Duration, Instant},
};

/// Rescans for unknown ids at most this often (cgroups come and go).
const RESCAN_EVERY: Duration = Duration::from_secs(1);
const MAX_DEPTH: usize = 32;
const MAX_MISSED: usize = 4096;

pub struct CgroupPaths {
    root: Option<PathBuf>,
    by_id: HashMap<u64, String>,
    last_scan: Option<Instant>,
    /// Ids a scan did not find: a new id gets one scan at once (a cgroup made
    /// a moment ago), an id still missing waits for the rate limit.
    missed: std::collections::HashSet<u64>,
}

impl CgroupPaths {
    pub fn new() -> Self {
        let root = std::fs::read_to_string("/proc/self/mountinfo").ok().and_then(|m| cgroup2_mount(&m));
        let mut paths = Self { root, by_id: HashMap::new(), last_scan: None, missed: Default::default() };
        paths.scan();
        paths
    }

    /// The cgroup2 mount point, if this host has one.
    #[cfg(test)]
    pub fn root(&self) -> Option<&std::path::Path> {
        self.root.as_deref()
    }

    /// Who an event of this cgroup belongs to: its path, container and pod
    /// (the task fields are left for the caller).
    pub fn attribute(&mut self, cgroup_id: Option<u64>, source: CgroupSource) -> Attribution {
        let cgroup_path = cgroup_id.and_then(|id| self.path(id));
        Attribution {
            cgroup_id,
            workload: Workload::from_cgroup_path(cgroup_path.as_deref()),
            cgroup_path,
            cgroup_source: if cgroup_id.is_some() { source } else { CgroupSource::None },
            pid: None,
            comm: None,
        }
    }

    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if !self.by_id.contains_key(&id)
            && (!self.missed.contains(&id) || self.last_scan.is_none_or(|t| t.elapsed() >= RESCAN_EVERY))
        {
            self.scan();
            if !self.by_id.contains_key(&id) {
                // Gone already (or never a cgroup): bounded, forgotten wholesale.
                if self.missed.len() >= MAX_MISSED {
                    self.missed.clear();
                }
                self.missed.insert(id);
            }
        }
        self.by_id.get(&id).cloned()
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else { return };
        self.by_id.clear();
        for dir in directories(&root) {
            let Ok(meta) = std::fs::metadata(&dir) else { continue };
            let rel = dir.strip_prefix(&root).map(|p| format!("/{}", p.display())).unwrap_or_default();
            self.by_id.insert(meta.ino(), rel);
        }
    }
}

/// Every cgroup directory below `root` (itself included), at most
/// [`MAX_DEPTH`] deep; cgroups that vanish during the walk are skipped.
pub fn directories(root: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        if depth < MAX_DEPTH
            && let Ok(entries) = std::fs::read_dir(&dir)
        {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
        found.push(dir);
    }
    found
}

/// A process's cgroup v2 id, from `/proc/PID/cgroup` (`0::/path`) and the
/// cgroup2 mount `root`; `None` when it has exited or is in none.
pub fn process_cgroup_id(root: &std::path::Path, pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    std::fs::metadata(root.join(rel.trim_start_matches('/'))).ok().map(|m| m.ino())
}

/// Finds the cgroup2 mount point in the text of /proc/self/mountinfo.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_on_a_hybrid_host() {
        let mountinfo = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/memory rw shared:11 - cgroup cgroup rw,memory";
        assert_eq!(cgroup2_mount(mountinfo), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn optional_fields_do_not_confuse_the_parser() {
        let mountinfo = "36 25 0:31 / /sys/fs/cgroup rw shared:9 master:1 - cgroup2 cgroup2 rw";
        assert_eq!(cgroup2_mount(mountinfo), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_mount("36 25 0:31 / /x rw - ext4 /dev/vda rw"), None);
    }

    #[test]
    fn own_cgroup_resolves_to_the_path_in_proc() {
        let mut paths = CgroupPaths::new();
        let Some(root) = paths.root().map(std::path::Path::to_path_buf) else {
            eprintln!("SKIPPED: no cgroup2 mount on this machine");
            return;
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap().to_string();
        let id = std::fs::metadata(root.join(rel.trim_start_matches('/'))).unwrap().ino();
        assert_eq!(paths.path(id), Some(rel));
    }
}
