//! Memory-cgroup programs: OOM victims (`oom:mark_victim`), tasks throttled
//! over `memory.high` (fentry/fexit or kprobe/kretprobe on
//! `mem_cgroup_handle_over_high`) and memcg reclaim runs
//! (`vmscan:mm_vmscan_memcg_reclaim_begin/end`).
//!
//! The OOM tracepoint runs in the task that ran into the limit (the OOM killer is
//! invoked from its allocation), which is not necessarily the victim: the
//! agent takes the current task's cgroup for the victim only when the pids
//! match, else it asks /proc about the record's `pid`.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_ns, bpf_probe_read_kernel_buf,
    },
    macros::{fentry, fexit, kprobe, kretprobe, map, tracepoint},
    maps::{HashMap, LruPerCpuHashMap},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use observer_common::{
    EventKind, counter,
    memcg::{
        MemcgConfig, MemcgReclaimEvent, MemcgThrottleEvent, NR_PAGES_UNKNOWN, OOM_RECORD_MAX, OomVictimEvent,
        PAGES_UNKNOWN, THROTTLE_FENTRY, THROTTLE_KPROBE,
    },
};

use crate::{
    kernel::read,
    maps::{EVENTS, count_lost, header, submit_flags},
};

/// Fixed part of every kernel's record: common header and `int pid`.
const OOM_RECORD_MIN: usize = 12;

#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let Some(mut entry) = EVENTS.reserve::<OomVictimEvent>(0) else {
        count_lost(counter::LOST_MEMCG_OOM_KILL);
        return 1;
    };
    let event = entry.as_mut_ptr();
    let record = ctx.as_ptr() as *const u8;
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: `event` points at a reserved, exclusively owned ring buffer slot
    // of the right size; every field is written before submit.
    unsafe {
        (*event).header = header(EventKind::OomVictim);
        (*event).task_cgroup_id = bpf_get_current_cgroup_id();
        (*event).task_pid = (pid_tgid >> 32) as u32;
        (*event).task_tid = pid_tgid as u32;
        (*event).task_comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*event)._pad = 0;
        let dst = &mut (*event).record;
        // The record lives in a per-CPU trace buffer far larger than this
        // copy, so reading past a short record stays in readable memory; the
        // small copy is the fallback should that ever fail.
        (*event).record_len = if bpf_probe_read_kernel_buf(record, &mut dst[..]).is_ok() {
            OOM_RECORD_MAX as u32
        } else if bpf_probe_read_kernel_buf(record, &mut dst[..OOM_RECORD_MIN]).is_ok() {
            OOM_RECORD_MIN as u32
        } else {
            0
        };
    }
    // A victim is gone soon: wake the agent now so it can still read /proc.
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
    0
}

/// Set by the agent before load (see `observer_common::memcg::MemcgConfig`).
#[unsafe(no_mangle)]
static MEMCG_CONFIG: MemcgConfig = MemcgConfig::UNKNOWN;

#[inline(always)]
fn config() -> MemcgConfig {
    // SAFETY: a read of our own read-only global, volatile so the default is
    // not folded in (the agent overrides it at load time).
    unsafe { core::ptr::read_volatile(&MEMCG_CONFIG) }
}

/// Entry of a throttle in progress, per task (`pid_tgid`).
#[derive(Copy, Clone)]
#[repr(C)]
struct ThrottleStart {
    ts_ns: u64,
    nr_pages: u64,
    /// The task's memory cgroup's usage, high and max, in pages.
    pages: [u64; 3],
}

#[map]
static THROTTLE_START: HashMap<u64, ThrottleStart> = HashMap::with_max_entries(16384, 0);

/// Begin time of a memcg reclaim run in progress, per task (`pid_tgid`).
#[map]
static RECLAIM_START: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

/// Entries to `mem_cgroup_handle_over_high` with no page over the limit, per
/// cgroup id: the kernel calls it on every return to user mode that handles
/// `TIF_NOTIFY_RESUME` (rseq sets that on each preemption), and such a call
/// returns at once. Counted, not sent, so that entries == events + these.
#[map]
pub static OVER_HIGH_IDLE: LruPerCpuHashMap<u64, u64> = LruPerCpuHashMap::with_max_entries(4096, 0);

#[fentry(function = "mem_cgroup_handle_over_high")]
pub fn memcg_over_high_fentry(_ctx: FEntryContext) -> i32 {
    over_high_enter();
    0
}

#[fexit(function = "mem_cgroup_handle_over_high")]
pub fn memcg_over_high_fexit(_ctx: FExitContext) -> i32 {
    over_high_exit(THROTTLE_FENTRY);
    0
}

#[kprobe]
pub fn memcg_over_high_kprobe(_ctx: ProbeContext) -> u32 {
    over_high_enter();
    0
}

#[kretprobe]
pub fn memcg_over_high_kretprobe(_ctx: RetProbeContext) -> u32 {
    over_high_exit(THROTTLE_KPROBE);
    0
}

#[inline(always)]
fn over_high_enter() {
    let offset = config().task_nr_pages_over_high;
    // SAFETY: the helper has no preconditions.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let nr_pages = match read::<u32>(task, offset) {
        Some(0) => {
            // SAFETY: the helper has no preconditions.
            let cgroup = unsafe { bpf_get_current_cgroup_id() };
            match OVER_HIGH_IDLE.get_ptr_mut(cgroup) {
                // SAFETY: per-CPU slot, only this CPU writes it now.
                Some(n) => unsafe { *n += 1 },
                None => {
                    let _ = OVER_HIGH_IDLE.insert(cgroup, 1, 0);
                }
            }
            return;
        }
        Some(n) => u64::from(n),
        None => NR_PAGES_UNKNOWN,
    };
    let off = config();
    let memcg =
        read::<*const u8>(task, off.task_cgroups).and_then(|css_set| read::<*const u8>(css_set, off.css_set_memcg));
    let page_count = |offset| memcg.and_then(|m| read::<u64>(m, offset)).unwrap_or(PAGES_UNKNOWN);
    let pages = [page_count(off.memcg_usage), page_count(off.memcg_high), page_count(off.memcg_max)];
    // SAFETY: the helper has no preconditions.
    let start = ThrottleStart { ts_ns: unsafe { bpf_ktime_get_ns() }, nr_pages, pages };
    let _ = THROTTLE_START.insert(bpf_get_current_pid_tgid(), start, 0);
}

#[inline(always)]
fn over_high_exit(mechanism: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(start) = (unsafe { THROTTLE_START.get(pid_tgid) }).copied() else { return };
    let _ = THROTTLE_START.remove(pid_tgid);
    let Some(mut entry) = EVENTS.reserve::<MemcgThrottleEvent>(0) else {
        count_lost(counter::LOST_MEMCG_THROTTLE);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned ring buffer
    // slot of the right size; every field is written before submit.
    unsafe {
        (*event).header = header(EventKind::MemcgThrottle);
        (*event).cgroup_id = bpf_get_current_cgroup_id();
        (*event).start_ns = start.ts_ns;
        (*event).nr_pages = start.nr_pages;
        (*event).pid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*event).mechanism = mechanism;
        (*event)._pad = 0;
        (*event).usage_pages = start.pages[0];
        (*event).high_pages = start.pages[1];
        (*event).max_pages = start.pages[2];
    }
    entry.submit(submit_flags());
}

#[tracepoint]
pub fn memcg_reclaim_begin(_ctx: TracePointContext) -> u32 {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = RECLAIM_START.insert(bpf_get_current_pid_tgid(), now, 0);
    0
}

#[tracepoint]
pub fn memcg_reclaim_end(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let start_ns = unsafe { RECLAIM_START.get(pid_tgid) }.copied().unwrap_or(0);
    if start_ns != 0 {
        let _ = RECLAIM_START.remove(pid_tgid);
    }
    let record = ctx.as_ptr() as *const u8;
    let nr_reclaimed = read::<u64>(record, config().reclaim_end_nr_reclaimed).unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<MemcgReclaimEvent>(0) else {
        count_lost(counter::LOST_MEMCG_RECLAIM);
        return 1;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: as in over_high_exit.
    unsafe {
        (*event).header = header(EventKind::MemcgReclaim);
        (*event).cgroup_id = bpf_get_current_cgroup_id();
        (*event).start_ns = start_ns;
        (*event).nr_reclaimed = nr_reclaimed;
        (*event).pid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    entry.submit(submit_flags());
    0
}
