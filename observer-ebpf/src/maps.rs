//! Maps shared by all programs.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use observer_common::{EventHeader, EventKind, counter};

/// Every individual event goes through this one ring buffer.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU counters, indexed by `observer_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// A record `signal`'s program could not queue: counted in `LOST` and in
/// that signal's own `LOST_*` counter.
#[inline(always)]
pub fn count_lost(signal: u32) {
    count(counter::LOST);
    count(signal);
}

/// The head of an event of `kind` seen now on this CPU.
#[inline(always)]
pub fn header(kind: EventKind) -> EventHeader {
    // SAFETY: neither helper has preconditions.
    unsafe {
        EventHeader {
            kind: kind as u32,
            cpu: aya_ebpf::helpers::bpf_get_smp_processor_id(),
            ts_ns: aya_ebpf::helpers::bpf_ktime_get_ns(),
        }
    }
}

/// Wake the agent only once this much is waiting: a wake-up per event costs
/// the traced task more than the program itself. The agent also drains on a
/// short timer, so a lone event waits at most that long.
const WAKEUP_BYTES: u64 = 32 * 1024;

/// Flags for `submit`: no wake-up until [`WAKEUP_BYTES`] are pending.
#[inline(always)]
pub fn submit_flags() -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}
