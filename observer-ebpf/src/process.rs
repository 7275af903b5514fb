//! Process lifecycle: `sched:sched_process_exec` (a new program image is in
//! place) and `sched:sched_process_exit` of a thread group's last thread
//! (the process ends). The agent finds new Go processes from the first and lets
//! go of ended ones from the second; a slow `/proc` rescan catches anything
//! missed, and `PROCESS_LOST` tells it when to rescan at once. A process of
//! a Go binary already probed is watched by the exec program itself.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task},
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};
use observer_common::{
    EventKind, counter,
    goruntime::{GoKnown, field},
    process::{BinaryKey, EXEC_WATCHED, ExecOffsets, ProcessEvent},
};

use crate::{
    goruntime::GO_PROCS,
    kernel::read,
    maps::{EVENTS, count_lost, header, submit_flags},
};

/// Exec and exit events that found the ring buffer full (also in `LOST`):
/// the agent rescans `/proc` when this grows.
#[map]
pub static PROCESS_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Go binaries whose probes are live, by file (the agent keeps it): a new
/// process of one is watched from here, before it runs user code, so no GC
/// cycle of its first milliseconds is missed.
#[map]
pub static GO_KNOWN: HashMap<BinaryKey, GoKnown> = HashMap::with_max_entries(1024, 0);

/// Set by the agent before load.
#[unsafe(no_mangle)]
static EXEC_OFFSETS: ExecOffsets = ExecOffsets::UNKNOWN;

#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let flags = if watch_if_known((pid_tgid >> 32) as u32).is_some() { EXEC_WATCHED } else { 0 };
    // A new program may need probes before it runs much: wake the agent now
    // (an exec costs far more than the wake-up).
    match send(EventKind::ProcessExec, pid_tgid, flags, BPF_RB_FORCE_WAKEUP as u64) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// Writes the `GO_PROCS` entry of a process whose new image is a known
/// binary: its addresses moved by the image's load bias.
#[inline(always)]
fn watch_if_known(pid: u32) -> Option<()> {
    // SAFETY: a read of our own read-only global; volatile so the compiler
    // does not fold the default value the agent overrides at load time.
    let off = unsafe { core::ptr::read_volatile(&EXEC_OFFSETS) };
    // SAFETY: the helper has no preconditions.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mm = read::<*const u8>(task, off.task_mm)?;
    let file = read::<*const u8>(mm, off.mm_exe_file)?;
    let inode = read::<*const u8>(file, off.file_inode)?;
    let ino = read::<u64>(inode, off.inode_ino)?;
    let sb = read::<*const u8>(inode, off.inode_sb)?;
    let dev = read::<u32>(sb, off.super_block_dev)?;
    // SAFETY: the value is copied out at once; the agent may remove it meanwhile.
    let known = unsafe { GO_KNOWN.get(&BinaryKey { dev: u64::from(dev), ino }) }.copied()?;
    let mut entry = known.entry;
    if known.pie != 0 {
        let bias = read::<u64>(mm, off.mm_start_code)?.wrapping_sub(known.exec_vaddr);
        for i in 0..field::SLOTS {
            if entry.addrs[i] != 0 {
                entry.addrs[i] = entry.addrs[i].wrapping_add(bias);
            }
        }
    }
    GO_PROCS.insert(&pid, &entry, 0).ok()
}

#[tracepoint]
pub fn process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Threads end all the time; only the last one's end is the process's.
    // The leader may go first while others still run (and hit our probes:
    // after the leader's exit they would go uncounted); the leader's exit
    // stands in where the kernel's layout is unknown.
    let last = group_dead().unwrap_or(pid_tgid as u32 == (pid_tgid >> 32) as u32);
    if !last {
        return 0;
    }
    // An entry the exec program wrote for a process the agent never got to
    // would outlive it.
    let _ = GO_PROCS.remove(&((pid_tgid >> 32) as u32));
    // Nothing waits on an exit: batched with the rest.
    match send(EventKind::ProcessExit, pid_tgid, 0, submit_flags()) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// Whether the current task is the last of its thread group to exit:
/// `do_exit` has taken it off `signal->live` before this tracepoint. Two
/// threads ending together may both see 0; the agent takes a second exit
/// of a process as a no-op.
#[inline(always)]
fn group_dead() -> Option<bool> {
    // SAFETY: as in `watch_if_known`.
    let off = unsafe { core::ptr::read_volatile(&EXEC_OFFSETS) };
    // SAFETY: the helper has no preconditions.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let signal = read::<*const u8>(task, off.task_signal)?;
    Some(read::<i32>(signal, off.signal_live)? == 0)
}

#[inline(always)]
fn send(kind: EventKind, pid_tgid: u64, event_flags: u32, flags: u64) -> Result<(), ()> {
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
        (*event).flags = event_flags;
        (*event)._pad = 0;
    }
    entry.submit(flags);
    Ok(())
}
