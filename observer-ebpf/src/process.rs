//! Process lifecycle: `sched:sched_process_exec` (a new program image is in
//! place) and `sched:sched_process_exit` of a thread-group leader (the
//! process ends). The agent finds new Go processes from the first and lets
//! go of ended ones from the second; a slow `/proc` rescan catches anything
//! missed, and `PROCESS_LOST` tells it when to rescan at once.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use observer_common::{EventKind, counter, process::ProcessEvent};

use crate::maps::{EVENTS, count_lost, header, submit_flags};

/// Exec and exit events that found the ring buffer full (also in `LOST`):
/// the agent rescans `/proc` when this grows.
#[map]
pub static PROCESS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    // A new program may need probes before it runs much: wake the agent now
    // (an exec costs far more than the wake-up).
    match send(EventKind::ProcessExec, bpf_get_current_pid_tgid(), BPF_RB_FORCE_WAKEUP as u64) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[tracepoint]
pub fn process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Threads end all the time; only the leader's end is the process's.
    if pid_tgid as u32 != (pid_tgid >> 32) as u32 {
        return 0;
    }
    // Nothing waits on an exit: batched with the rest.
    match send(EventKind::ProcessExit, pid_tgid, submit_flags()) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[inline(always)]
fn send(kind: EventKind, pid_tgid: u64, flags: u64) -> Result<(), ()> {
    let Some(mut entry) = EVENTS.reserve::<ProcessEvent>(0) else {
        count_lost(counter::LOST_PROCESS);
        if let Some(slot) = PROCESS_LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
            unsafe { *slot += 1 };
        }
        return Err(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned ring buffer slot
    // of the right size; every field is written before submit.
    unsafe {
        (*event).header = header(kind);
        (*event).pid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
    }
    entry.submit(flags);
    Ok(())
}
