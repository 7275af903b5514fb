//! TCP reset events (`tcp:tcp_send_reset`, `tcp:tcp_receive_reset`).
//!
//! The programs copy the tracepoint's record verbatim; the agent decodes it
//! with the field layout of the running kernel's `format` file, which differs
//! between kernels (6.1 has split `saddr`/`saddr_v6` fields, 6.10+ has
//! `sockaddr`-sized ones and a `reason`).

use crate::{COMM_LEN, EventHeader, OFFSET_UNKNOWN};

/// Longest tracepoint record the programs copy (header included).
pub const RECORD_MAX: usize = 128;

pub const DIRECTION_SENT: u8 = 1;
pub const DIRECTION_RECEIVED: u8 = 2;
/// Sent for a packet that matched no full socket, seen by the fallback hook on
/// `tcp_v{4,6}_send_reset` (kernels before 6.10, whose tracepoint misses these):
/// `record` holds a [`PacketTuple`] of the packet being answered.
pub const DIRECTION_SENT_NO_SOCKET: u8 = 3;

/// Addresses of a packet, as the fallback hook copies them into `record`.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct PacketTuple {
    /// 4 or 6.
    pub family: u8,
    pub _pad: u8,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    pub _pad2: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<PacketTuple>() == 40);

/// Where the programs find the socket and packet pointers in one tracepoint's
/// record, read by the agent from the tracepoint's `format` file.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ResetTracepointLayout {
    /// Offset of `skaddr` (`const void *`), or [`OFFSET_UNKNOWN`].
    pub skaddr: u32,
    /// Offset of `skbaddr` (`const void *`), or [`OFFSET_UNKNOWN`].
    pub skbaddr: u32,
    /// Bytes of the record to copy (at most [`RECORD_MAX`]).
    pub record_len: u32,
    pub _pad: u32,
}

impl ResetTracepointLayout {
    pub const UNKNOWN: Self = Self { skaddr: OFFSET_UNKNOWN, skbaddr: OFFSET_UNKNOWN, record_len: 0, _pad: 0 };
}

const _: () = assert!(core::mem::size_of::<ResetTracepointLayout>() == 16);

#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct TcpResetEvent {
    pub header: EventHeader,
    /// cgroup v2 id of the socket's owner (`sk->sk_cgrp_data`); 0 when the
    /// reset has no full socket (a closed port, a time-wait or request socket).
    pub sk_cgroup_id: u64,
    /// cgroup v2 id of the task that was current when the tracepoint fired.
    pub task_cgroup_id: u64,
    /// Network namespace inode of the socket, else of the packet's device.
    pub netns: u32,
    /// Network namespace inode of the current task.
    pub task_netns: u32,
    /// tgid and tid of the current task (0 for none).
    pub pid: u32,
    pub tid: u32,
    /// [`DIRECTION_SENT`] or [`DIRECTION_RECEIVED`].
    pub direction: u8,
    /// 1 when `sk` is a full socket, so `sk_cgroup_id` is the owner's.
    pub sk_full: u8,
    /// `sk->sk_state`, 0 without a socket.
    pub sk_state: u8,
    /// 1 when the full socket still has an owner (`sk->sk_socket` set); an
    /// orphan (closed, lingering in FIN_WAIT or LAST_ACK) has none.
    pub sk_owned: u8,
    /// Bytes of `record` that were copied.
    pub record_len: u32,
    /// [`crate::tp_btf::RECORD_TRACEPOINT`] or [`crate::tp_btf::RECORD_SOCKET_TUPLE`]
    /// (ignored for [`DIRECTION_SENT_NO_SOCKET`]).
    pub record_kind: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
    /// The tracepoint's record, as the kernel wrote it (the first 8 bytes,
    /// the common fields, are overwritten by the kernel for BPF programs).
    pub record: [u8; RECORD_MAX],
}

const _: () = assert!(core::mem::size_of::<TcpResetEvent>() == 16 + 8 + 8 + 4 * 4 + 4 + 4 + 8 + COMM_LEN + RECORD_MAX);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers and byte arrays, padding is explicit.
unsafe impl aya::Pod for ResetTracepointLayout {}
#[cfg(feature = "user")]
// SAFETY: plain old data: integers and byte arrays, padding is explicit.
unsafe impl aya::Pod for TcpResetEvent {}
