//! Process lifecycle from the scheduler's tracepoints: a program image
//! replaced (`sched:sched_process_exec`) and a process ended
//! (`sched:sched_process_exit` of its thread-group leader). The agent uses
//! them to find new Go processes at once and to let go of ended ones.

use crate::EventHeader;

/// One exec (kind `ProcessExec`) or one process end (kind `ProcessExit`).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct ProcessEvent {
    /// `header.ts_ns` is when the new image was in place (exec) or when the
    /// leader started to exit.
    pub header: EventHeader,
    /// The process (tgid).
    pub pid: u32,
    /// The thread that ran the tracepoint (the leader for an exit).
    pub tid: u32,
}

const _: () = assert!(core::mem::size_of::<ProcessEvent>() == 16 + 4 + 4);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, no padding.
unsafe impl aya::Pod for ProcessEvent {}
