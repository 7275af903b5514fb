//! Go runtime uprobes. The agent attaches them once per binary (for every
//! process running it) at function entry, or at one of a function's own
//! return instructions (never as uretprobes: Go moves goroutine stacks), and
//! fills `GO_PROCS` with where to read the runtime's globals in each watched
//! process: hits of other processes stop at that lookup.
//!
//! Go's register ABI (ABIInternal, amd64): integer arguments in RAX, RBX,
//! RCX, …; the running goroutine's `g` in R14.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    cty::c_void,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated},
    macros::{map, uprobe},
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::ProbeContext,
};
use observer_common::{
    EventKind, counter,
    goruntime::{
        GO_ASSIST_DURATION_KNOWN, GO_ASSIST_TIMED, GoAssistEvent, GoGcEvent, GoHeapEvent, GoProcess,
        SCAVENGE_EVENT_MIN_BYTES, SCAVENGE_EVENTS_PER_CPU_SEC, ScavengeCounts, field,
    },
};

use crate::maps::{EVENTS, count, count_lost};

/// Watched Go processes by tgid; the agent adds and removes entries.
#[map]
pub static GO_PROCS: HashMap<u32, GoProcess> = HashMap::with_max_entries(4096, 0);

/// Small `runtime.sysUnusedOS` calls counted per process (tgid), per CPU;
/// the agent reads the rise every second and removes a process's entry once
/// it has ended. Bounded: a call that finds it full is sent as an event.
#[map]
pub static GO_SCAVENGE_COUNTS: PerCpuHashMap<u32, ScavengeCounts> = PerCpuHashMap::with_max_entries(1024, 0);

/// Large scavenger calls sent as events in this CPU's current second.
#[map]
static GO_SCAVENGE_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct EventBudget {
    /// `bpf_ktime_get_ns() / 1e9` of the current window.
    second: u64,
    sent: u64,
}

/// Assists in progress, by (tgid, goroutine). LRU: an assist whose process
/// exits before it returns is pushed out, never leaked.
#[map]
static GO_ASSISTS: LruHashMap<AssistKey, AssistState> = LruHashMap::with_max_entries(16384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct AssistState {
    start_ns: u64,
    /// `runtime.gcAssistAlloc1` ran: the goroutine did mark work (or was
    /// about to park for want of it), not just take background credit.
    worked: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct AssistKey {
    goroutine: u64,
    tgid: u32,
    _pad: u32,
}

/// The watched process of the current task, if this hit came through the
/// probe set it is watched with; `None` otherwise (not a watched process,
/// or another set's hit).
///
/// One file reached by paths the agent cannot tell apart (an image layer
/// under two overlay mounts: two `/proc/PID/exe` identities) can carry two
/// sets, each firing for every process of the file: each set's links carry
/// its number as their cookie, and a process's entry names its set.
///
/// Set by the agent: 0 where the kernel has no `bpf_get_attach_cookie`
/// (before 5.15); a read-only global, so the verifier never sees the call
/// there, and every link is of set 0.
#[unsafe(no_mangle)]
static GO_ATTACH_COOKIES: u32 = 1;

#[inline(always)]
pub fn watched(ctx: &ProbeContext) -> Option<(u64, GoProcess)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is copied out at once; entries are only replaced whole.
    // Another process mapping the same binary has no entry: not ours to report.
    let proc_ = unsafe { GO_PROCS.get(&tgid) }.copied()?;
    // SAFETY: a read of our own read-only global (volatile: the agent sets it at load).
    if unsafe { core::ptr::read_volatile(&GO_ATTACH_COOKIES) } == 0 {
        return Some((pid_tgid, proc_));
    }
    // SAFETY: the program's own context.
    let cookie = unsafe { generated::bpf_get_attach_cookie(ctx.as_ptr()) };
    (cookie == u64::from(proc_.set)).then_some((pid_tgid, proc_))
}

/// Entry of `runtime.freeStackSpans`: once per GC cycle, at its end.
#[uprobe]
pub fn go_gc_end(ctx: ProbeContext) -> u32 {
    match try_gc_end(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[inline(always)]
fn try_gc_end(ctx: &ProbeContext) -> Result<(), ()> {
    let Some((pid_tgid, proc_)) = watched(ctx) else { return Ok(()) };
    count(counter::GO_GC_SEEN);
    let Some(mut entry) = EVENTS.reserve::<GoGcEvent>(0) else {
        count_lost(counter::LOST_GO_GC);
        return Err(());
    };
    let event = entry.as_mut_ptr();
    // Every figure is read as 8 bytes (the agent keeps the low half of the
    // 4-byte ones) and its `known` bit computed without a branch: a branch
    // per figure gave the verifier 2^11 paths, which Linux 6.1 rejects as
    // too large. An address of 0 (unknown offset) fails the read cleanly.
    let mut known = 0u32;
    for index in 0..field::COUNT {
        // SAFETY: `index < COUNT <= SLOTS`, inside both arrays; the helper
        // checks the user address, writes 8 bytes (zeros on failure) into the
        // reserved slot and returns 0 or a negative error.
        let ret = unsafe {
            generated::bpf_probe_read_user(
                (*event).values.as_mut_ptr().add(index) as *mut c_void,
                8,
                proc_.addrs[index] as *const c_void,
            )
        };
        known |= ((((ret as u64) >> 63) ^ 1) as u32) << index;
    }
    // SAFETY: `event` points at a reserved, exclusively owned ring buffer slot
    // of the right size; every field is written before submit.
    unsafe {
        (*event).header = crate::maps::header(EventKind::GoGc);
        (*event).cgroup_id = bpf_get_current_cgroup_id();
        (*event).pid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
        (*event).known = known;
        (*event)._pad = 0;
        for index in field::COUNT..field::SLOTS {
            (*event).values[index] = 0;
        }
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    entry.submit(crate::maps::submit_flags());
    Ok(())
}

/// Go's ABIInternal registers of the probed task.
#[inline(always)]
fn regs(ctx: &ProbeContext) -> (u64, u64, u64) {
    // SAFETY: `regs` is the probed task's saved registers, valid for the
    // program's run.
    let r = unsafe { &*ctx.regs };
    (r.rax, r.rbx, r.r14)
}

/// Entry of `runtime.gcAssistAlloc`, past its stack check (a stack growth
/// restarts the function from its entry, which would count it twice). Most
/// calls only take the background workers' spare credit and return: an
/// episode is reported when `runtime.gcAssistAlloc1` ran in it.
#[uprobe]
pub fn go_assist_start(ctx: ProbeContext) -> u32 {
    match try_assist_start(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[inline(always)]
fn try_assist_start(ctx: &ProbeContext) -> Result<(), ()> {
    let Some((pid_tgid, proc_)) = watched(ctx) else { return Ok(()) };
    if proc_.flags & GO_ASSIST_TIMED == 0 {
        // No return probes for this binary: `go_assist_work` counts.
        return Ok(());
    }
    let (_, _, g) = regs(ctx);
    let key = AssistKey { goroutine: g, tgid: (pid_tgid >> 32) as u32, _pad: 0 };
    // SAFETY: a helper without preconditions.
    let state = AssistState { start_ns: unsafe { bpf_ktime_get_ns() }, worked: 0, _pad: 0 };
    GO_ASSISTS.insert(&key, &state, 0).map_err(|_| ())
}

/// Entry of `runtime.gcAssistAlloc1(gp, scanWork)`, which
/// `runtime.gcAssistAlloc` calls on the system stack when the goroutine
/// must do mark work itself: R14 is then the thread's g0, RAX `gp`, the
/// assisting goroutine.
#[uprobe]
pub fn go_assist_work(ctx: ProbeContext) -> u32 {
    match try_assist_work(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[inline(always)]
fn try_assist_work(ctx: &ProbeContext) -> Result<(), ()> {
    let Some((pid_tgid, proc_)) = watched(ctx) else { return Ok(()) };
    let (gp, _, _) = regs(ctx);
    if proc_.flags & GO_ASSIST_TIMED == 0 {
        // Count-only: one event per pass of assist work.
        return send_assist(pid_tgid, gp, None);
    }
    let key = AssistKey { goroutine: gp, tgid: (pid_tgid >> 32) as u32, _pad: 0 };
    if let Some(state) = GO_ASSISTS.get_ptr_mut(&key) {
        // SAFETY: a valid map value; only this goroutine's probes touch it.
        unsafe { (*state).worked = 1 };
    }
    Ok(())
}

/// One of `runtime.gcAssistAlloc`'s return instructions.
#[uprobe]
pub fn go_assist_end(ctx: ProbeContext) -> u32 {
    match try_assist_end(&ctx) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[inline(always)]
fn try_assist_end(ctx: &ProbeContext) -> Result<(), ()> {
    let Some((pid_tgid, _)) = watched(ctx) else { return Ok(()) };
    let (_, _, g) = regs(ctx);
    let key = AssistKey { goroutine: g, tgid: (pid_tgid >> 32) as u32, _pad: 0 };
    // SAFETY: the value is copied out at once.
    // None: the assist started before the probes were attached.
    let Some(state) = (unsafe { GO_ASSISTS.get(&key) }).copied() else { return Ok(()) };
    let _ = GO_ASSISTS.remove(&key);
    if state.worked == 0 {
        // Paid with the background workers' credit: no assist.
        return Ok(());
    }
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    send_assist(pid_tgid, g, Some(now.saturating_sub(state.start_ns)))
}

#[inline(always)]
fn send_assist(pid_tgid: u64, g: u64, duration: Option<u64>) -> Result<(), ()> {
    let Some(mut entry) = EVENTS.reserve::<GoAssistEvent>(0) else {
        count_lost(counter::LOST_GO_ASSIST);
        return Err(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: a reserved, exclusively owned slot; every field is written.
    unsafe {
        (*event).header = crate::maps::header(EventKind::GoAssist);
        (*event).cgroup_id = bpf_get_current_cgroup_id();
        (*event).pid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
        (*event).goroutine = g;
        (*event).duration_ns = duration.unwrap_or(0);
        (*event).flags = if duration.is_some() { GO_ASSIST_DURATION_KNOWN } else { 0 };
        (*event)._pad = 0;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    entry.submit(crate::maps::submit_flags());
    Ok(())
}

/// Entry of `runtime.(*pageAlloc).grow(base, size)`: RAX the page
/// allocator, RBX `base`, RCX `size` in bytes. Rare by construction (whole
/// 4 MiB chunks of address space, never given back): one event each.
#[uprobe]
pub fn go_heap_grow(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, _)) = watched(&ctx) else { return 0 };
    // SAFETY: as in `regs`.
    let size = unsafe { (*ctx.regs).rcx };
    match send_heap(pid_tgid, EventKind::GoHeapGrow, size) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// Entry of `runtime.sysUnusedOS(v, n)`: RAX the address, RBX `n` bytes
/// handed back to the OS. An event of its own when large and within this
/// CPU's budget (see `SCAVENGE_EVENT_MIN_BYTES`), else counted per process.
#[uprobe]
pub fn go_scavenge(ctx: ProbeContext) -> u32 {
    let Some((pid_tgid, _)) = watched(&ctx) else { return 0 };
    let (_, n, _) = regs(&ctx);
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let single = n >= SCAVENGE_EVENT_MIN_BYTES && within_budget(now);
    if !single && count_scavenge((pid_tgid >> 32) as u32, n, now) {
        return 0;
    }
    match send_heap(pid_tgid, EventKind::GoScavenge, n) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// Adds one call of `bytes` to the process's counts; false when the map is
/// full (the caller sends the call as an event instead).
#[inline(always)]
fn count_scavenge(tgid: u32, bytes: u64, now: u64) -> bool {
    for _ in 0..2 {
        if let Some(counts) = GO_SCAVENGE_COUNTS.get_ptr_mut(tgid) {
            // SAFETY: this CPU's slot of a live map value; only this CPU
            // writes it while the program runs.
            unsafe {
                (*counts).calls += 1;
                (*counts).bytes += bytes;
                (*counts).last_ns = now;
            }
            return true;
        }
        // Another CPU may insert it first (EEXIST): look it up again.
        let first = ScavengeCounts { calls: 1, bytes, last_ns: now };
        if GO_SCAVENGE_COUNTS.insert(tgid, first, BPF_NOEXIST as u64).is_ok() {
            return true;
        }
    }
    false
}

/// Whether this CPU may still send a large call as an event this second.
#[inline(always)]
fn within_budget(now: u64) -> bool {
    let Some(budget) = GO_SCAVENGE_BUDGET.get_ptr_mut(0) else { return false };
    let second = now / 1_000_000_000;
    // SAFETY: per-CPU slot, only this CPU touches it while the program runs.
    unsafe {
        if (*budget).second != second {
            (*budget).second = second;
            (*budget).sent = 0;
        }
        if (*budget).sent >= SCAVENGE_EVENTS_PER_CPU_SEC {
            return false;
        }
        (*budget).sent += 1;
    }
    true
}

#[inline(always)]
fn send_heap(pid_tgid: u64, kind: EventKind, amount: u64) -> Result<(), ()> {
    let Some(mut entry) = EVENTS.reserve::<GoHeapEvent>(0) else {
        count_lost(counter::LOST_GO_HEAP);
        return Err(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: a reserved, exclusively owned slot; every field is written.
    unsafe {
        (*event).header = crate::maps::header(kind);
        (*event).cgroup_id = bpf_get_current_cgroup_id();
        (*event).pid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
        (*event).amount = amount;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    entry.submit(crate::maps::submit_flags());
    Ok(())
}
