//! Memory-cgroup signals: `memory.events` counters per cgroup (`events`) and
//! OOM victims from `oom:mark_victim` (`oom`).

pub mod events;
pub mod oom;

use std::path::PathBuf;

use crate::cgroup::cgroup2_mount;

/// How `memory.events` changes are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mechanism {
    /// inotify `IN_MODIFY` on each cgroup's `memory.events` (the kernel
    /// notifies on every counter change, coalescing bursts).
    #[default]
    Inotify,
    /// Read every watched file on a timer (for when inotify is unavailable).
    Poll,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Self::Inotify => "inotify",
            Self::Poll => "poll",
        }
    }
}

/// The cgroup2 mount when it has the memory controller, else why not.
pub fn memory_root() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let v1_memory = crate::kernel::features::v1_controllers(&mountinfo).iter().any(|c| c == "memory");
    let why = |what: &str| {
        if v1_memory {
            format!("{what} (memory is on cgroup v1 here)")
        } else {
            what.to_string()
        }
    };
    let root = cgroup2_mount(&mountinfo).ok_or_else(|| why("no cgroup2 mount"))?;
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        Ok(root)
    } else {
        Err(why("no cgroup v2 memory controller"))
    }
}
