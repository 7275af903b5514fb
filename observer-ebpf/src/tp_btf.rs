//! Arguments of BTF tracepoints, at indexes the agent read from BTF.

use aya_ebpf::programs::BtfTracePointContext;

/// Argument `N` when the agent found it there (`index == N`), else `None`.
/// The verifier allows only constant context offsets, and a load past the
/// prototype's end is rejected: the index is a constant, and the agent's
/// `index` (a frozen global) lets the verifier drop the branch where the
/// kernel lacks the argument.
#[inline(always)]
pub fn arg<const N: usize>(ctx: &BtfTracePointContext, index: u32) -> Option<u64> {
    if index == N as u32 { Some(ctx.arg(N)) } else { None }
}

#[inline(always)]
pub fn ptr<const N: usize>(ctx: &BtfTracePointContext, index: u32) -> *const u8 {
    arg::<N>(ctx, index).map_or(core::ptr::null(), |v| v as *const u8)
}

#[inline(always)]
pub fn config<T: Copy>(global: &T) -> T {
    // SAFETY: a read of our own read-only global; volatile so the compiler
    // does not fold the default value the agent overrides at load time.
    unsafe { core::ptr::read_volatile(global) }
}
