//! cgroup v2 ids of processes, read without creating or changing any cgroup,
//! and whether the cgroup2 root has the memory controller (the VM tests).
//!
//! A cgroup v2 id is the inode number of the cgroup's directory in the cgroup2
//! mount. On a hybrid host cgroup2 is mounted somewhere other than
//! /sys/fs/cgroup (here /sys/fs/cgroup/unified), so the mount is looked up.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The cgroup v2 id of the cgroup at `path` (as in `/proc/PID/cgroup`'s `0::`
/// line, e.g. `/` or `/system.slice/x.service`).
pub fn id_of_path(path: &str) -> u64 {
    let dir = cgroup2_mount().join(path.trim_start_matches('/'));
    std::fs::metadata(&dir).unwrap_or_else(|e| panic!("stat {}: {e}", dir.display())).ino()
}

/// The cgroup v2 path of process `pid`.
pub fn path_of_pid(pid: u32) -> String {
    let file = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {file}: {e}"));
    v2_path(&text).unwrap_or_else(|| panic!("no cgroup v2 (0::) line in {file}:\n{text}"))
}

/// The cgroup v2 id of process `pid`.
pub fn id_of_pid(pid: u32) -> u64 {
    id_of_path(&path_of_pid(pid))
}

/// Where cgroup2 is mounted, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    cgroup2_mount_in(&text).expect("no cgroup2 mount in /proc/self/mountinfo")
}

/// The cgroup2 root when it has the memory controller, else why not.
pub fn memory_root() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let root = cgroup2_mount_in(&mountinfo).ok_or("no cgroup2 mount")?;
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        Ok(root)
    } else {
        Err(format!("no cgroup v2 memory controller at {}", root.display()))
    }
}

/// The root for the VM tests, or `None` after saying why they are skipped.
/// A kernel without the controller is a fact of the host, not a missing
/// prerequisite, so this skips even under `OBSERVER_E2E_REQUIRED=1`.
pub fn require_memory_root() -> Option<PathBuf> {
    match memory_root() {
        Ok(root) => Some(root),
        Err(reason) => {
            let test = std::thread::current().name().unwrap_or("?").to_string();
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: {reason} ({test})");
            None
        }
    }
}

/// The path from the `0::PATH` line of a `/proc/PID/cgroup` file.
pub fn v2_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string)
}

/// The first cgroup2 mount point in a mountinfo text. Fields: id, parent,
/// dev, root, mount point, options..., `-`, fstype, source, super options.
pub fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(|m| PathBuf::from(unescape(m)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_cgroup2_on_a_hybrid_host() {
        assert_eq!(cgroup2_mount_in(HYBRID), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn finds_cgroup2_on_a_unified_host_with_optional_fields() {
        let text = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_mount_in(text), Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn unescapes_mount_points() {
        let text = "41 31 0:38 / /mnt/my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount_in(text), Some(PathBuf::from("/mnt/my cg")));
        assert_eq!(cgroup2_mount_in("41 31 0:38 / /x rw - cgroup cgroup rw,cpu\n"), None);
    }

    #[test]
    fn reads_the_v2_line_of_proc_cgroup() {
        let text = "4:memory:/process_api/7d3f\n1:cpu:/\n0::/user.slice/a.scope\n";
        assert_eq!(v2_path(text).as_deref(), Some("/user.slice/a.scope"));
        assert_eq!(v2_path("4:memory:/x\n"), None);
    }
}
