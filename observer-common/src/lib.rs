//! `#[repr(C)]` types shared by observer's eBPF programs and its agent.
//!
//! Every struct here is read by both sides byte for byte: fields are laid out
//! explicitly (no implicit padding), flags are integers, and each size is
//! asserted at compile time so the two sides can never drift apart.
#![no_std]

pub mod goruntime;
pub mod kernel;
pub mod memcg;
pub mod net;
pub mod process;
pub mod profile;
pub mod tcp;
pub mod tp_btf;

/// Length of a task's `comm`, as the kernel defines it (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Marks an offset the agent could not resolve on the running kernel; the
/// programs skip any read that would need it.
pub const OFFSET_UNKNOWN: u32 = u32::MAX;

/// What an event record in the ring buffer carries; the first field of every event.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    TcpReset = 1,
    GoGc = 2,
    GoAssist = 3,
    GoHeapGrow = 4,
    GoScavenge = 5,
    NetDrop = 10,
    TcpRetransmit = 11,
    OomVictim = 20,
    MemcgThrottle = 21,
    MemcgReclaim = 22,
    ProcessExec = 30,
    ProcessExit = 31,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::TcpReset),
            2 => Some(Self::GoGc),
            3 => Some(Self::GoAssist),
            4 => Some(Self::GoHeapGrow),
            5 => Some(Self::GoScavenge),
            10 => Some(Self::NetDrop),
            11 => Some(Self::TcpRetransmit),
            20 => Some(Self::OomVictim),
            21 => Some(Self::MemcgThrottle),
            22 => Some(Self::MemcgReclaim),
            30 => Some(Self::ProcessExec),
            31 => Some(Self::ProcessExit),
            _ => None,
        }
    }
}

/// Indexes of the per-CPU counters map `COUNTERS`.
pub mod counter {
    /// Events that could not be sent because the ring buffer was full.
    pub const LOST: u32 = 0;
    /// `tcp:tcp_send_reset` hits.
    pub const RESET_SENT_SEEN: u32 = 1;
    /// `tcp:tcp_receive_reset` hits.
    pub const RESET_RECEIVED_SEEN: u32 = 2;
    /// GC cycle ends (`runtime.freeStackSpans` hits) in watched Go processes.
    pub const GO_GC_SEEN: u32 = 3;
    /// Of `LOST`, by the signal whose program found the ring buffer full.
    pub const LOST_TCP_RESET_SENT: u32 = 4;
    pub const LOST_TCP_RESET_RECEIVED: u32 = 5;
    pub const LOST_NET_DROP: u32 = 6;
    pub const LOST_TCP_RETRANSMIT: u32 = 7;
    pub const LOST_MEMCG_OOM_KILL: u32 = 8;
    pub const LOST_MEMCG_THROTTLE: u32 = 9;
    pub const LOST_MEMCG_RECLAIM: u32 = 10;
    pub const LOST_GO_GC: u32 = 11;
    pub const LOST_GO_ASSIST: u32 = 12;
    pub const LOST_GO_HEAP: u32 = 13;
    pub const LOST_PROCESS: u32 = 14;
    /// CPU samples of watched processes (`profile`), each counted in a slice,
    pub const CPU_SAMPLES_SEEN: u32 = 15;
    /// of which the slice's count map was full (the sample is not in any profile),
    pub const CPU_SAMPLES_UNCOUNTED: u32 = 16;
    /// and of which a stack could not be recorded (counted as an unknown stack).
    pub const CPU_STACKS_LOST: u32 = 17;
    /// Allocation samples of watched processes (every method).
    pub const ALLOC_SAMPLES_SEEN: u32 = 18;
    /// Allocation samples not counted: the slot's count map was full.
    pub const ALLOC_SAMPLES_UNCOUNTED: u32 = 19;
    /// Allocation samples counted without their stack.
    pub const ALLOC_STACKS_LOST: u32 = 20;
    pub const COUNT: u32 = 21;
    /// Each `LOST_*` counter and the signal it counts for (the names of
    /// the agent's signal list; `process.lifecycle` is exec and exit).
    pub const LOST_BY_SIGNAL: [(u32, &str); 11] = [
        (LOST_TCP_RESET_SENT, "tcp.reset.sent"),
        (LOST_TCP_RESET_RECEIVED, "tcp.reset.received"),
        (LOST_NET_DROP, "net.drop"),
        (LOST_TCP_RETRANSMIT, "tcp.retransmit"),
        (LOST_MEMCG_OOM_KILL, "memcg.oom_kill"),
        (LOST_MEMCG_THROTTLE, "memcg.throttle"),
        (LOST_MEMCG_RECLAIM, "memcg.reclaim"),
        (LOST_GO_GC, "go.gc"),
        (LOST_GO_ASSIST, "go.assist"),
        (LOST_GO_HEAP, "go.heap"),
        (LOST_PROCESS, "process.lifecycle"),
    ];
}

/// Common head of every ring buffer record.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the kernel saw the event.
    pub ts_ns: u64,
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 16);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, no padding.
unsafe impl aya::Pod for EventHeader {}
