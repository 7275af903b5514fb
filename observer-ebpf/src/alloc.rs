//! Allocation sampling in watched Go processes: entry uprobes on the
//! runtime's allocation paths, counted by user stack in kernel maps beside
//! the CPU samples (same slot, same stack map), never sent as events.
//!
//! - `runtime.mProf_Malloc`: the runtime's own memory-profile samples (one
//!   per `runtime.MemProfileRate` bytes on average); the agent scales them as
//!   pprof does, with the rate it reads from the process.
//! - Binaries the linker built without memory profiling never call it: for
//!   them `runtime.(*mcache).refill` (a new span for a size class: its
//!   bytes, sampled once per `SPAN_SAMPLE_BYTES` of them per process and
//!   CPU) and `runtime.(*mcache).allocLarge` (each allocation over 32 KiB,
//!   of its size).

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    cty::c_void,
    helpers::{bpf_get_current_cgroup_id, generated},
    macros::{map, uprobe},
    maps::{LruPerCpuHashMap, PerCpuHashMap},
    programs::ProbeContext,
};
use observer_common::{
    counter,
    goruntime::{GoProcess, field},
    profile::{
        ALLOC_KEYS_PER_SLOT, AllocCounts, AllocKey, NO_STACK, SIZE_CLASSES, SPAN_BYTES, SPAN_OBJECTS,
        SPAN_SAMPLE_BYTES, alloc_method,
    },
};

use crate::{
    goruntime::watched,
    maps::count,
    profile::{record_stack, slot},
};

#[map]
static ALLOC_COUNTS_0: PerCpuHashMap<AllocKey, AllocCounts> = PerCpuHashMap::with_max_entries(ALLOC_KEYS_PER_SLOT, 0);
#[map]
static ALLOC_COUNTS_1: PerCpuHashMap<AllocKey, AllocCounts> = PerCpuHashMap::with_max_entries(ALLOC_KEYS_PER_SLOT, 0);

/// Span bytes and objects refilled since the last sample, per process
/// (tgid) and CPU. LRU: an ended process's entry is pushed out.
#[map]
static SPANS_SINCE_SAMPLE: LruPerCpuHashMap<u32, SpanAccumulator> = LruPerCpuHashMap::with_max_entries(4096, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct SpanAccumulator {
    bytes: u64,
    objects: u64,
}

/// Go's ABIInternal integer arguments 1–3 (RAX, RBX, RCX).
#[inline(always)]
fn args(ctx: &ProbeContext) -> (u64, u64, u64) {
    // SAFETY: the probed task's saved registers, valid for the program's run.
    let r = unsafe { &*ctx.regs };
    (r.rax, r.rbx, r.rcx)
}

/// `mProf_Malloc(mp *m, p unsafe.Pointer, size uintptr)` (Go 1.23 and later).
#[uprobe]
pub fn go_alloc_sampled(ctx: ProbeContext) -> u32 {
    let (_, _, size) = args(&ctx);
    record(&ctx, alloc_method::SAMPLED, 1, size)
}

/// `mProf_Malloc(p unsafe.Pointer, size uintptr)` (Go 1.22 and earlier).
#[uprobe]
pub fn go_alloc_sampled_2(ctx: ProbeContext) -> u32 {
    let (_, size, _) = args(&ctx);
    record(&ctx, alloc_method::SAMPLED, 1, size)
}

/// `(c *mcache) refill(spc spanClass)`: the size class is `spc >> 1`.
#[uprobe]
pub fn go_alloc_span(ctx: ProbeContext) -> u32 {
    let (_, spc, _) = args(&ctx);
    let class = ((spc & 0xff) >> 1) as usize;
    if class == 0 || class >= SIZE_CLASSES {
        return 0;
    }
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    let (objects, bytes) = (u64::from(SPAN_OBJECTS[class]), u64::from(SPAN_BYTES[class]));
    // Below the sampling point: added up, no stack walked.
    match SPANS_SINCE_SAMPLE.get_ptr_mut(&tgid) {
        Some(acc) => {
            // SAFETY: this CPU's value; nothing else writes it while the program runs.
            let (total_bytes, total_objects) = unsafe { ((*acc).bytes + bytes, (*acc).objects + objects) };
            if total_bytes < SPAN_SAMPLE_BYTES {
                // SAFETY: as above.
                unsafe { *acc = SpanAccumulator { bytes: total_bytes, objects: total_objects } };
                return 0;
            }
            // SAFETY: as above.
            unsafe { *acc = SpanAccumulator { bytes: 0, objects: 0 } };
            record(&ctx, alloc_method::SPAN_REFILL, total_objects, total_bytes)
        }
        None => {
            // A process's first refill on this CPU starts its count (only
            // watched processes' entries matter; others age out).
            let _ = SPANS_SINCE_SAMPLE.insert(&tgid, &SpanAccumulator { bytes, objects }, 0);
            0
        }
    }
}

/// `(c *mcache) allocLarge(size uintptr, noscan bool) *mspan`.
#[uprobe]
pub fn go_alloc_large(ctx: ProbeContext) -> u32 {
    let (_, size, _) = args(&ctx);
    record(&ctx, alloc_method::LARGE, 1, size)
}

/// The process's `runtime.MemProfileRate` now (0 when not known): what
/// this sample stands for, read as it is taken (a program may change it).
#[inline(always)]
fn mem_profile_rate(proc_: &GoProcess) -> u64 {
    let mut rate = 0u64;
    // SAFETY: the helper checks the user address and writes 8 bytes (zeros
    // on failure) into `rate`; an address of 0 fails cleanly.
    unsafe {
        generated::bpf_probe_read_user(
            &mut rate as *mut u64 as *mut c_void,
            8,
            proc_.addrs[field::MEM_PROFILE_RATE] as *const c_void,
        )
    };
    rate
}

#[inline(always)]
fn record(ctx: &ProbeContext, method: u32, objects: u64, bytes: u64) -> u32 {
    let Some((pid_tgid, proc_)) = watched(ctx) else { return 0 };
    let rate = if method == alloc_method::SAMPLED { mem_profile_rate(&proc_) } else { 0 };
    count(counter::ALLOC_SAMPLES_SEEN);
    let slot = slot();
    let counts = if slot == 0 { &ALLOC_COUNTS_0 } else { &ALLOC_COUNTS_1 };
    let user_stack = record_stack(ctx, slot, BPF_F_USER_STACK as u64);
    if user_stack == NO_STACK {
        count(counter::ALLOC_STACKS_LOST);
    }
    // SAFETY: the helper has no preconditions.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let key = AllocKey { cgroup_id, user_stack, tgid: (pid_tgid >> 32) as u32, method };
    match counts.get_ptr_mut(&key) {
        // SAFETY: this CPU's value; nothing else writes it while the program runs.
        Some(c) => unsafe {
            (*c).samples += 1;
            (*c).objects += objects;
            (*c).bytes += bytes;
            (*c).rate = rate;
        },
        None => {
            if counts.insert(&key, &AllocCounts { samples: 1, objects, bytes, rate }, BPF_NOEXIST as u64).is_err() {
                count(counter::ALLOC_SAMPLES_UNCOUNTED);
            }
        }
    }
    0
}
