//! Maps shared by all programs.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use observer_common::counter;

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
