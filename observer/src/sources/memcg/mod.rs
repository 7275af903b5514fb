//! Memory-cgroup signals: `memory.events` counters and `memory.pressure`
//! (PSI) stalls per cgroup (`events`, `pressure`), tasks throttled over
//! `memory.high` and memcg reclaim runs (`kernel`), OOM victims from
//! `oom:mark_victim` (`oom`).
//!
//! Each signal's mechanism can be forced (`--memcg-mechanism`,
//! `--memcg-throttle`, `--memcg-pressure`, `--memcg-reclaim`) so tests
//! exercise every one.

pub mod events;
pub mod kernel;
pub mod oom;
pub mod pressure;
pub mod reclaim_stat;

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

/// How tasks throttled over `memory.high` are seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Throttle {
    /// fentry, else kprobe, else vmscan: the first that loads and attaches.
    #[default]
    Auto,
    /// fentry/fexit on `mem_cgroup_handle_over_high`.
    Fentry,
    /// kprobe/kretprobe on `mem_cgroup_handle_over_high`.
    Kprobe,
    /// Inferred from `vmscan:mm_vmscan_memcg_reclaim_begin/end` in the task's context.
    Vmscan,
}

impl Throttle {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Vmscan => "vmscan",
        }
    }
}

/// How `memory.pressure` stalls are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pressure {
    /// A PSI trigger (`some <stall> <window>`) per cgroup, woken by POLLPRI;
    /// a cgroup whose trigger cannot be made is polled.
    #[default]
    Trigger,
    /// Read every watched `memory.pressure` on a timer.
    Poll,
}

impl Pressure {
    pub fn name(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Poll => "poll",
        }
    }
}

/// How memcg reclaim is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reclaim {
    /// The tracepoints, else `memory.stat` deltas.
    #[default]
    Auto,
    /// `vmscan:mm_vmscan_memcg_reclaim_begin/end`: one event per reclaim run.
    Tracepoint,
    /// Per-cgroup `memory.stat` reclaim counters, read when the cgroup's
    /// `memory.events` changes and on a slow timer: summaries, not runs.
    Stat,
}

/// The cgroup2 mount when it has the memory controller, else why not.
pub fn memory_root() -> Result<PathBuf, String> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let v1_memory = crate::kernel::features::v1_controllers(&mountinfo).iter().any(|c| c == "memory");
    let why = |what: &str| {
        if v1_memory { format!("{what} (memory is on cgroup v1 here)") } else { what.to_string() }
    };
    let root = cgroup2_mount(&mountinfo).ok_or_else(|| why("no cgroup2 mount"))?;
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        Ok(root)
    } else {
        Err(why("no cgroup v2 memory controller"))
    }
}
