//! Memory-cgroup events from the kernel: OOM victims (`oom:mark_victim`).
//!
//! The program copies the tracepoint's record verbatim (its fields differ
//! between kernels: 6.1 has only `pid`, newer ones add `comm`, rss and more);
//! the agent decodes it with the running kernel's `format` file.

use crate::{COMM_LEN, EventHeader};

/// Longest `oom:mark_victim` record the program copies (header included).
pub const OOM_RECORD_MAX: usize = 128;

/// One `oom:mark_victim` hit.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct OomVictimEvent {
    pub header: EventHeader,
    /// cgroup of the task the tracepoint ran in: the victim's only when
    /// `task_pid`/`task_tid` equals the record's `pid` (the OOM killer runs in
    /// whichever task hit the limit, often but not always the victim).
    pub task_cgroup_id: u64,
    pub task_pid: u32,
    pub task_tid: u32,
    pub task_comm: [u8; COMM_LEN],
    /// Bytes of `record` copied (0 when the copy failed).
    pub record_len: u32,
    pub _pad: u32,
    pub record: [u8; OOM_RECORD_MAX],
}

const _: () = assert!(core::mem::size_of::<OomVictimEvent>() == 16 + 8 + 8 + 16 + 8 + OOM_RECORD_MAX);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers and byte arrays only, no padding.
unsafe impl aya::Pod for OomVictimEvent {}
