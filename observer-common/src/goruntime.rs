//! Go runtime events (uprobes on runtime functions of Go processes).
//!
//! The agent tells the programs, per watched process, where to read the
//! runtime's globals; the programs read them at function entry (never on
//! return: Go moves goroutine stacks, so uretprobes corrupt them).

use crate::{COMM_LEN, EventHeader};

/// Figures of a GC cycle the programs read from the runtime's globals:
/// indexes into [`GoProcess::addrs`] and [`GoGcEvent::values`], and bits
/// (`1 << index`) of [`GoGcEvent::known`].
pub mod field {
    /// `work.cycles` (u32): the cycle's number as gctrace prints it.
    pub const CYCLES: usize = 0;
    /// `work.tSweepTerm` (int64, Go's `nanotime()`: CLOCK_MONOTONIC): the
    /// cycle's start (sweep termination, the first stop of the world).
    pub const T_SWEEP_TERM: usize = 1;
    /// `work.tMark`: concurrent mark started.
    pub const T_MARK: usize = 2;
    /// `work.tMarkTerm`: mark termination (the second stop) started.
    pub const T_MARK_TERM: usize = 3;
    /// `work.tEnd`: the cycle ended.
    pub const T_END: usize = 4;
    /// `work.heap0` (bytes): live heap when the cycle started.
    pub const HEAP0: usize = 5;
    /// `work.heap1`: live heap at mark termination.
    pub const HEAP1: usize = 6;
    /// `work.heap2`: heap marked live by this cycle.
    pub const HEAP2: usize = 7;
    /// `gcController.lastHeapGoal`: this cycle's heap goal ("MB goal").
    pub const HEAP_GOAL: usize = 8;
    /// `gcController.gcPercent` (atomic int32): GOGC in effect, -1 = off.
    pub const GC_PERCENT: usize = 9;
    /// `gcController.memoryLimit` (atomic int64): GOMEMLIMIT in effect, in
    /// bytes; `i64::MAX` = no limit.
    pub const MEMORY_LIMIT: usize = 10;
    pub const COUNT: usize = 11;
    /// Not a GC figure: where `runtime.MemProfileRate` is, which the
    /// allocation probes read with each sample (0: not known).
    pub const MEM_PROFILE_RATE: usize = 11;
    /// Array length (an even count keeps the structs free of padding).
    pub const SLOTS: usize = 12;

    /// Fields that are 4 bytes wide in the runtime; the others are 8.
    pub const fn is_u32(index: usize) -> bool {
        index == CYCLES || index == GC_PERCENT
    }
}

/// `GoProcess.flags`: return probes of `runtime.gcAssistAlloc` are attached,
/// so its entry only records the start time.
pub const GO_ASSIST_TIMED: u32 = 1;

/// Value of the `GO_PROCS` map, keyed by tgid: one entry per watched Go process.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GoProcess {
    /// Where each [`field`] lives in the process (load bias applied); 0 for
    /// a field whose offset is unknown for this binary (never read then).
    /// All of them are in `runtime.work` and `runtime.gcController`, whose
    /// pages the runtime has written by the time a cycle ends.
    pub addrs: [u64; field::SLOTS],
    /// [`GO_ASSIST_TIMED`].
    pub flags: u32,
    /// The probe set the process is watched with: the cookie of its links.
    pub set: u32,
}

const _: () = assert!(core::mem::size_of::<GoProcess>() == 8 * field::SLOTS + 8);

/// Value of the `GO_KNOWN` map, keyed by [`crate::process::BinaryKey`]: a
/// binary whose probes are live, so that the exec program watches a new
/// process of it from its first instruction (it writes the process's
/// `GO_PROCS` entry before the process runs user code).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct GoKnown {
    /// The entry, with link-time addresses (0: unknown).
    pub entry: GoProcess,
    /// Position-independent: the program adds the load bias, `mm->start_code`
    /// less [`GoKnown::exec_vaddr`], to every address.
    pub pie: u32,
    pub _pad: u32,
    /// The lowest `p_vaddr` of the binary's executable `PT_LOAD` segments
    /// (what the kernel's ELF loader sets `start_code` from).
    pub exec_vaddr: u64,
}

const _: () = assert!(core::mem::size_of::<GoKnown>() == core::mem::size_of::<GoProcess>() + 16);

/// One finished GC cycle: sent at entry to `runtime.freeStackSpans`, which
/// only `runtime.gcMarkTermination` calls, once per cycle, after it has set
/// every figure read here and before it prints the gctrace line.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct GoGcEvent {
    pub header: EventHeader,
    /// cgroup v2 id of the process (the task that ran mark termination).
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    /// Bit `1 << i` set: `values[i]` was read from the runtime.
    pub known: u32,
    pub _pad: u32,
    /// Raw values by [`field`] index (4-byte fields zero-extended).
    pub values: [u64; field::SLOTS],
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<GoGcEvent>() == 16 + 8 + 4 * 4 + 8 * field::SLOTS + COMM_LEN);

/// `GoAssistEvent.flags`: `duration_ns` was measured (entry to return).
pub const GO_ASSIST_DURATION_KNOWN: u32 = 1;

/// One mark assist: a goroutine that allocated during marking had to help
/// the GC (a `runtime.gcAssistAlloc` call, from entry to one of its returns,
/// in which `runtime.gcAssistAlloc1` did mark work).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct GoAssistEvent {
    pub header: EventHeader,
    pub cgroup_id: u64,
    pub pid: u32,
    /// The thread the assist ended on (a parked assist may resume on another).
    pub tid: u32,
    /// The goroutine (`g` pointer).
    pub goroutine: u64,
    /// Wall time from entry to return, including time parked waiting for
    /// the background workers; valid with [`GO_ASSIST_DURATION_KNOWN`].
    pub duration_ns: u64,
    pub flags: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<GoAssistEvent>() == 16 + 8 + 8 + 8 + 8 + 8 + COMM_LEN);

/// A call of `runtime.sysUnusedOS` returning at least this many bytes is
/// sent as an event of its own (kind `GoScavenge`), within
/// [`SCAVENGE_EVENTS_PER_CPU_SEC`]; the others are counted per process in
/// `GO_SCAVENGE_COUNTS` ([`ScavengeCounts`]), which the agent reads every
/// second. The background scavenger returns 64 KiB at a time, thousands of
/// times a second in a program that frees a lot; a call that returns a run
/// of pages at once (`debug.FreeOSMemory`) is worth seeing on its own.
pub const SCAVENGE_EVENT_MIN_BYTES: u64 = 1 << 20;

/// Large calls sent as events per CPU and second at most: scavenging for a
/// tight memory limit makes thousands of 1–4 MiB calls a second too (2,000
/// a second measured under `GOMEMLIMIT=48MiB`); past it they are counted.
pub const SCAVENGE_EVENTS_PER_CPU_SEC: u64 = 16;

/// Value of `GO_SCAVENGE_COUNTS` (per CPU, keyed by tgid): the calls of
/// `runtime.sysUnusedOS` not sent as events since the process was first
/// seen scavenging. Never reset: the agent reports the
/// rise (a reset would race with a program adding to it). A call that
/// finds the map full is sent as a `GoScavenge` event instead, whatever its
/// size, so every call is either counted here or an event, never both.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ScavengeCounts {
    pub calls: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_ns()` of the last call counted on this CPU.
    pub last_ns: u64,
}

const _: () = assert!(core::mem::size_of::<ScavengeCounts>() == 24);

/// Heap growth (`runtime.(*pageAlloc).grow`, kind `GoHeapGrow`) or memory
/// returned to the OS (`runtime.sysUnusedOS`, kind `GoScavenge`: calls of at
/// least [`SCAVENGE_EVENT_MIN_BYTES`] within the budget, and any call that
/// did not fit in `GO_SCAVENGE_COUNTS`).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct GoHeapEvent {
    pub header: EventHeader,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    /// Bytes: `GoHeapGrow`, added to the page heap (the `size` argument);
    /// `GoScavenge`, released (the `n` argument).
    pub amount: u64,
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<GoHeapEvent>() == 16 + 8 + 8 + 8 + COMM_LEN);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, padding is explicit.
unsafe impl aya::Pod for GoProcess {}
#[cfg(feature = "user")]
// SAFETY: plain old data: integers and a byte array, no implicit padding.
unsafe impl aya::Pod for GoGcEvent {}

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, padding is explicit.
unsafe impl aya::Pod for GoKnown {}
#[cfg(feature = "user")]
// SAFETY: plain old data: integers and a byte array, no implicit padding.
unsafe impl aya::Pod for GoAssistEvent {}
#[cfg(feature = "user")]
// SAFETY: plain old data: integers and a byte array, no implicit padding.
unsafe impl aya::Pod for GoHeapEvent {}
#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, no padding.
unsafe impl aya::Pod for ScavengeCounts {}
