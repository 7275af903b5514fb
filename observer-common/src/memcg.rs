//! Memory-cgroup events from the kernel: OOM victims (`oom:mark_victim`),
//! tasks throttled over `memory.high` and memcg reclaim runs.
//!
//! The program copies the tracepoint's record verbatim (its fields differ
//! between kernels: 6.1 has only `pid`, newer ones add `comm`, rss and more);
//! the agent decodes it with the running kernel's `format` file.

use crate::{COMM_LEN, EventHeader};

/// Longest `oom:mark_victim` record the program copies (header included).
pub const OOM_RECORD_MAX: usize = 128;

/// One `oom:mark_victim` hit.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct OomVictimEvent {
    pub header: EventHeader,
    /// cgroup of the task the tracepoint ran in: the victim's only when
    /// `task_pid`/`task_tid` equals the record's `pid` (the OOM killer runs in
    /// whichever task hit the limit, often but not always the victim).
    pub task_cgroup_id: u64,
    pub task_pid: u32,
    pub task_tid: u32,
    pub task_comm: [u8; COMM_LEN],
    /// Bytes of `record` copied (0 when the copy failed).
    pub record_len: u32,
    pub _pad: u32,
    pub record: [u8; OOM_RECORD_MAX],
}

const _: () = assert!(core::mem::size_of::<OomVictimEvent>() == 16 + 8 + 8 + 16 + 8 + OOM_RECORD_MAX);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers and byte arrays only, no padding.
unsafe impl aya::Pod for OomVictimEvent {}

/// `MemcgThrottleEvent::mechanism`: which hook saw the throttle.
pub const THROTTLE_FENTRY: u32 = 1;
pub const THROTTLE_KPROBE: u32 = 2;

/// Load-time settings of the memcg programs, from the running kernel's BTF
/// and the reclaim tracepoint's `format` file.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MemcgConfig {
    /// `struct task_struct.memcg_nr_pages_over_high` (unsigned int): the pages
    /// a task charged above `memory.high`, which `mem_cgroup_handle_over_high`
    /// reads (and zeroes) on entry. [`crate::OFFSET_UNKNOWN`] when absent.
    pub task_nr_pages_over_high: u32,
    /// Offset of `nr_reclaimed` (unsigned long) in the
    /// `vmscan:mm_vmscan_memcg_reclaim_end` record.
    pub reclaim_end_nr_reclaimed: u32,
    /// `task_struct.cgroups` (a `struct css_set *`).
    pub task_cgroups: u32,
    /// `css_set.subsys[memory_cgrp_id]`: the task's memory cgroup (a
    /// `struct mem_cgroup *`, whose `css` is its first member).
    pub css_set_memcg: u32,
    /// `mem_cgroup.memory.usage`, `.high`, `.max` (pages; `memory.current`,
    /// `memory.high`, `memory.max`).
    pub memcg_usage: u32,
    pub memcg_high: u32,
    pub memcg_max: u32,
    pub _pad: u32,
}

impl MemcgConfig {
    pub const UNKNOWN: Self = Self {
        task_nr_pages_over_high: crate::OFFSET_UNKNOWN,
        reclaim_end_nr_reclaimed: crate::OFFSET_UNKNOWN,
        task_cgroups: crate::OFFSET_UNKNOWN,
        css_set_memcg: crate::OFFSET_UNKNOWN,
        memcg_usage: crate::OFFSET_UNKNOWN,
        memcg_high: crate::OFFSET_UNKNOWN,
        memcg_max: crate::OFFSET_UNKNOWN,
        _pad: 0,
    };
}

const _: () = assert!(core::mem::size_of::<MemcgConfig>() == 32);

/// A page count the program could not read.
pub const PAGES_UNKNOWN: u64 = u64::MAX;

#[cfg(feature = "user")]
// SAFETY: plain old data: u32 only, no padding.
unsafe impl aya::Pod for MemcgConfig {}

/// `nr_pages` when the pages over the limit could not be read.
pub const NR_PAGES_UNKNOWN: u64 = u64::MAX;

/// One call of `mem_cgroup_handle_over_high` that had pages over `memory.high`
/// to answer for (reclaim, then a penalty sleep), seen at its exit.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct MemcgThrottleEvent {
    pub header: EventHeader,
    /// cgroup v2 id of the throttled task (the one charged, whose cgroup or
    /// an ancestor of it is over `memory.high`).
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` at entry; `header.ts_ns` is the exit.
    pub start_ns: u64,
    /// `task_struct.memcg_nr_pages_over_high` at entry, or [`NR_PAGES_UNKNOWN`].
    pub nr_pages: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; COMM_LEN],
    /// [`THROTTLE_FENTRY`] or [`THROTTLE_KPROBE`].
    pub mechanism: u32,
    pub _pad: u32,
    /// The task's memory cgroup's usage, `memory.high` and `memory.max` in
    /// pages at entry, when the throttle began ([`PAGES_UNKNOWN`]: not read):
    /// the limit may be lifted while the task sleeps its penalty.
    pub usage_pages: u64,
    pub high_pages: u64,
    pub max_pages: u64,
}

const _: () = assert!(core::mem::size_of::<MemcgThrottleEvent>() == 16 + 24 + 8 + 16 + 8 + 24);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers and a byte array, no padding.
unsafe impl aya::Pod for MemcgThrottleEvent {}

/// One memcg reclaim run (`vmscan:mm_vmscan_memcg_reclaim_begin` → `_end`) in
/// the current task's context, seen at its end.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct MemcgReclaimEvent {
    pub header: EventHeader,
    /// cgroup v2 id of the reclaiming task: the tracepoints do not name the
    /// memcg being reclaimed (see the agent's `memcg::reclaim` docs).
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` at begin, 0 when the begin was not seen (the
    /// agent attached in the middle of the run); `header.ts_ns` is the end.
    pub start_ns: u64,
    /// `nr_reclaimed` of the end record (pages).
    pub nr_reclaimed: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<MemcgReclaimEvent>() == 16 + 24 + 8 + 16);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers and a byte array, no padding.
unsafe impl aya::Pod for MemcgReclaimEvent {}
