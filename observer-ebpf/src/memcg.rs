//! OOM victims: copy the `oom:mark_victim` record and the current task.
//!
//! The tracepoint runs in the task that ran into the limit (the OOM killer is
//! invoked from its allocation), which is not necessarily the victim: the
//! agent takes the current task's cgroup for the victim only when the pids
//! match, else it asks /proc about the record's `pid`.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id,
        bpf_ktime_get_ns, bpf_probe_read_kernel_buf,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use observer_common::{
    EventKind, counter,
    memcg::{OOM_RECORD_MAX, OomVictimEvent},
};

use crate::maps::{EVENTS, count};

/// Fixed part of every kernel's record: common header and `int pid`.
const OOM_RECORD_MIN: usize = 12;

#[tracepoint]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let Some(mut entry) = EVENTS.reserve::<OomVictimEvent>(0) else {
        count(counter::LOST);
        return 1;
    };
    let event = entry.as_mut_ptr();
    let record = ctx.as_ptr() as *const u8;
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: `event` points at a reserved, exclusively owned ring buffer slot
    // of the right size; every field is written before submit.
    unsafe {
        (*event).header.kind = EventKind::OomVictim as u32;
        (*event).header.cpu = bpf_get_smp_processor_id();
        (*event).header.ts_ns = bpf_ktime_get_ns();
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
