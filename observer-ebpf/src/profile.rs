//! CPU sampling: a `perf_event` program on every CPU (hardware cycles or the
//! software CPU clock, at a set frequency) that counts each sample of a
//! watched Go process by its user and kernel stacks. Stacks are walked by
//! the kernel through frame pointers, which Go keeps. Counted in kernel
//! maps (per CPU, so no atomics), never sent: the agent drains one slot's maps while the program
//! fills the other (`PROFILE_SLOT`).

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid},
    macros::{map, perf_event},
    maps::{Array, PerCpuHashMap, StackTrace},
    programs::{PerfEventContext, tracing::StackIdContext},
};
use observer_common::{
    counter,
    profile::{NO_STACK, SAMPLE_KEYS_PER_SLOT, STACKS_PER_SLOT, SampleKey},
};

use crate::{goruntime::GO_PROCS, maps::count};

/// Which slot the program fills (0 or 1); the agent flips it.
#[map]
pub static PROFILE_SLOT: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static CPU_COUNTS_0: PerCpuHashMap<SampleKey, u64> = PerCpuHashMap::with_max_entries(SAMPLE_KEYS_PER_SLOT, 0);
#[map]
static CPU_COUNTS_1: PerCpuHashMap<SampleKey, u64> = PerCpuHashMap::with_max_entries(SAMPLE_KEYS_PER_SLOT, 0);
#[map]
static CPU_STACKS_0: StackTrace = StackTrace::with_max_entries(STACKS_PER_SLOT, 0);
#[map]
static CPU_STACKS_1: StackTrace = StackTrace::with_max_entries(STACKS_PER_SLOT, 0);

/// The slot being filled, and its stack map (shared with `alloc`).
#[inline(always)]
pub fn slot_stacks() -> (u32, &'static StackTrace) {
    match PROFILE_SLOT.get(0).copied().unwrap_or(0) {
        0 => (0, &CPU_STACKS_0),
        _ => (1, &CPU_STACKS_1),
    }
}

#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Only watched processes (the idle task and every other process stop here).
    // SAFETY: a lookup; the value is not used.
    if tgid == 0 || unsafe { GO_PROCS.get(&tgid) }.is_none() {
        return 0;
    }
    count(counter::CPU_SAMPLES_SEEN);
    let (slot, stacks) = slot_stacks();
    let counts = if slot == 0 { &CPU_COUNTS_0 } else { &CPU_COUNTS_1 };
    let user = stack_id(&ctx, stacks, BPF_F_USER_STACK as u64);
    // A sample taken in user mode has no kernel stack: not a loss.
    let kernel = ctx.get_stackid(stacks, 0).map_or(NO_STACK, |id| id as i32);
    if user == NO_STACK {
        count(counter::CPU_STACKS_LOST);
    }
    // SAFETY: the helper has no preconditions.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let key = SampleKey { cgroup_id, tgid, user_stack: user, kernel_stack: kernel, _pad: 0 };
    match counts.get_ptr_mut(&key) {
        // SAFETY: this CPU's value; nothing else writes it while the program runs.
        Some(n) => unsafe { *n += 1 },
        None => {
            if counts.insert(&key, &1, BPF_NOEXIST as u64).is_err() {
                count(counter::CPU_SAMPLES_UNCOUNTED);
            }
        }
    }
    0
}

#[inline(always)]
fn stack_id(ctx: &PerfEventContext, stacks: &StackTrace, flags: u64) -> i32 {
    ctx.get_stackid(stacks, flags).map_or(NO_STACK, |id| id as i32)
}
