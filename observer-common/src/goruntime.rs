//! Go runtime events (uprobes on runtime functions of Go processes).
//!
//! The agent tells the programs, per watched process, where to read the
//! runtime's globals; the programs read them at function entry (never on
//! return: Go moves goroutine stacks, so uretprobes corrupt them).

use crate::{COMM_LEN, EventHeader};

/// `GoProcess.flags`: `cycles_addr` is valid.
pub const GO_CYCLES_KNOWN: u32 = 1;

/// `GoGcEvent.flags`: `cycle` was read from the runtime.
pub const GO_GC_CYCLE_KNOWN: u32 = 1;

/// Value of the `GO_PROCS` map, keyed by tgid: one entry per watched Go process.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GoProcess {
    /// Address of `runtime.work.cycles` (u32) in the process: the number of
    /// the cycle in progress, as gctrace prints it. Written by `gcStart`, so
    /// its page is present when mark termination reads it (an untouched BSS
    /// page, like `memstats.numgc`'s before the first cycle, cannot be read
    /// from a uprobe).
    pub cycles_addr: u64,
    /// [`GO_CYCLES_KNOWN`] and later bits.
    pub flags: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<GoProcess>() == 16);

/// One finished GC cycle: sent at entry to `runtime.gcMarkTermination`, which
/// runs exactly once per cycle (`runtime.gcStart` may return without one).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct GoGcEvent {
    pub header: EventHeader,
    /// cgroup v2 id of the process (the task that ran mark termination).
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    /// The cycle's number as `GODEBUG=gctrace=1` prints it (`gc N`), valid
    /// with [`GO_GC_CYCLE_KNOWN`].
    pub cycle: u32,
    pub flags: u32,
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<GoGcEvent>() == 16 + 8 + 4 * 4 + COMM_LEN);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, padding is explicit.
unsafe impl aya::Pod for GoProcess {}
#[cfg(feature = "user")]
// SAFETY: plain old data: integers and a byte array, no implicit padding.
unsafe impl aya::Pod for GoGcEvent {}
