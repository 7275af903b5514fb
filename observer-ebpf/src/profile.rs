//! CPU sampling: a `perf_event` program on every CPU (hardware cycles or the
//! software CPU clock, at a set frequency) that counts each sample of a
//! watched Go process by its user and kernel stacks. Stacks are walked by
//! the kernel through frame pointers, which Go keeps, and kept by a 64-bit
//! hash of their frames (`record_stack`, shared with `alloc`). Counted in
//! kernel maps (per CPU, so no atomics), never sent: the agent drains one
//! slot's maps while the programs fill the other (`PROFILE_SLOT`).

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    cty::c_void,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, generated},
    macros::{map, perf_event},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    programs::PerfEventContext,
};
use observer_common::{
    counter,
    profile::{MAX_FRAMES, NO_STACK, SAMPLE_KEYS_PER_SLOT, STACKS_PER_SLOT, SampleKey, Stack},
};

use crate::{goruntime::GO_PROCS, maps::count};

/// Which slot the programs fill (0 or 1); the agent flips it.
#[map]
pub static PROFILE_SLOT: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static CPU_COUNTS_0: PerCpuHashMap<SampleKey, u64> = PerCpuHashMap::with_max_entries(SAMPLE_KEYS_PER_SLOT, 0);
#[map]
static CPU_COUNTS_1: PerCpuHashMap<SampleKey, u64> = PerCpuHashMap::with_max_entries(SAMPLE_KEYS_PER_SLOT, 0);
#[map]
static STACKS_0: HashMap<u64, Stack> = HashMap::with_max_entries(STACKS_PER_SLOT, 0);
#[map]
static STACKS_1: HashMap<u64, Stack> = HashMap::with_max_entries(STACKS_PER_SLOT, 0);

/// Where a stack is read before it is hashed (too large for the BPF stack).
#[map]
static STACK_SCRATCH: PerCpuArray<Stack> = PerCpuArray::with_max_entries(1, 0);

/// The slot being filled.
#[inline(always)]
pub fn slot() -> u32 {
    PROFILE_SLOT.get(0).copied().unwrap_or(0)
}

/// Records the current user (`BPF_F_USER_STACK`) or kernel (0) stack in
/// `slot`'s stack map; its key, or [`NO_STACK`] when there is none or the
/// map is full.
#[inline(always)]
pub fn record_stack<C: EbpfContext>(ctx: &C, slot: u32, flags: u64) -> u64 {
    let Some(buf) = STACK_SCRATCH.get_ptr_mut(0) else { return NO_STACK };
    // SAFETY: this CPU's scratch entry, exclusively ours while the program
    // runs; the helper writes at most the size given into `ips`.
    let written = unsafe {
        generated::bpf_get_stack(ctx.as_ptr(), (*buf).ips.as_mut_ptr() as *mut c_void, (MAX_FRAMES * 8) as u32, flags)
    };
    if written <= 0 {
        return NO_STACK;
    }
    let frames = (written as usize / 8).min(MAX_FRAMES);
    // FNV-1a over the frames, salted by the kind: a user and a kernel
    // stack with the same addresses are two stacks.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ flags;
    for i in 0..MAX_FRAMES {
        if i >= frames {
            break;
        }
        // SAFETY: `i < MAX_FRAMES`, inside the array.
        let ip = unsafe { (*buf).ips[i] };
        hash = (hash ^ ip).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let key = if hash == NO_STACK { 1 } else { hash };
    // SAFETY: as above.
    unsafe { (*buf).len = frames as u64 };
    let stacks = if slot == 0 { &STACKS_0 } else { &STACKS_1 };
    // SAFETY: the scratch entry is a whole, initialised `Stack`.
    match stacks.insert(&key, unsafe { &*buf }, BPF_NOEXIST as u64) {
        Ok(()) => key,
        // -EEXIST: this stack is there already.
        Err(e) if e == -17 => key,
        Err(_) => NO_STACK,
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
    let slot = slot();
    let counts = if slot == 0 { &CPU_COUNTS_0 } else { &CPU_COUNTS_1 };
    let user = record_stack(&ctx, slot, BPF_F_USER_STACK as u64);
    // A sample taken in user mode has no kernel stack: not a loss.
    let kernel = record_stack(&ctx, slot, 0);
    if user == NO_STACK {
        count(counter::CPU_STACKS_LOST);
    }
    // SAFETY: the helper has no preconditions.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let key = SampleKey { cgroup_id, user_stack: user, kernel_stack: kernel, tgid, _pad: 0 };
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
