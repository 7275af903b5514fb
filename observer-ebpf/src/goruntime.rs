//! Go runtime uprobes. The agent attaches them per watched process (scoped to
//! its pid) at function entry only, and fills `GO_PROCS` with where to read
//! the runtime's globals in that process.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_user,
    },
    macros::{map, uprobe},
    maps::HashMap,
    programs::ProbeContext,
};
use observer_common::{
    EventKind, counter,
    goruntime::{GO_CYCLES_KNOWN, GO_GC_CYCLE_KNOWN, GoGcEvent, GoProcess},
};

use crate::maps::{EVENTS, count};

/// Watched Go processes by tgid; the agent adds and removes entries.
#[map]
pub static GO_PROCS: HashMap<u32, GoProcess> = HashMap::with_max_entries(4096, 0);

/// Entry of `runtime.gcMarkTermination`: once per GC cycle.
#[uprobe]
pub fn go_gc_mark_termination(_ctx: ProbeContext) -> u32 {
    match try_gc_mark_termination() {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[inline(always)]
fn try_gc_mark_termination() -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is copied out at once; entries are only replaced whole.
    let Some(proc_) = (unsafe { GO_PROCS.get(&tgid) }).copied() else {
        // Another process mapping the same binary: not ours to report.
        return Ok(());
    };
    count(counter::GO_GC_SEEN);
    // work.cycles was incremented when this cycle started.
    let cycle = if proc_.flags & GO_CYCLES_KNOWN != 0 {
        // SAFETY: bpf_probe_read_user checks the address and fails cleanly.
        unsafe { bpf_probe_read_user(proc_.cycles_addr as *const u32) }.ok()
    } else {
        None
    };
    let Some(mut entry) = EVENTS.reserve::<GoGcEvent>(0) else {
        count(counter::LOST);
        return Err(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned ring buffer slot
    // of the right size; every field is written before submit.
    unsafe {
        (*event).header.kind = EventKind::GoGc as u32;
        (*event).header.cpu = bpf_get_smp_processor_id();
        (*event).header.ts_ns = bpf_ktime_get_ns();
        (*event).cgroup_id = bpf_get_current_cgroup_id();
        (*event).pid = tgid;
        (*event).tid = pid_tgid as u32;
        (*event).cycle = cycle.unwrap_or(0);
        (*event).flags = if cycle.is_some() { GO_GC_CYCLE_KNOWN } else { 0 };
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    entry.submit(crate::maps::submit_flags());
    Ok(())
}
