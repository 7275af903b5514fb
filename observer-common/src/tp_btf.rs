//! BTF tracepoints (`tp_btf`): the programs see the tracepoint's C arguments
//! rather than its `format` record, and the kernel counts their skipped runs
//! (`recursion_misses`) where a classic tracepoint is skipped silently.
//!
//! A tracepoint's argument list differs between kernels (`tcp_send_reset`
//! gained `reason` in 6.10, `kfree_skb` `rx_sk` in 6.11, `tcp_retransmit_skb`
//! `err` in 6.13): the agent reads it from BTF and tells each program the
//! index of every argument it uses.

/// An argument this kernel's tracepoint does not have.
pub const ARG_ABSENT: u32 = u32::MAX;

/// Where a program finds its arguments; each an index or [`ARG_ABSENT`].
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TpBtfArgs {
    /// `struct sock *`.
    pub sk: u32,
    /// `struct sk_buff *`.
    pub skb: u32,
    /// `void *location` (`kfree_skb`).
    pub location: u32,
    /// The reason enum (`kfree_skb`, `tcp_send_reset`).
    pub reason: u32,
    /// `struct sock *rx_sk` (`kfree_skb`, 6.11+).
    pub rx_sk: u32,
    /// `int err` (`tcp_retransmit_skb`, 6.13+).
    pub err: u32,
}

impl TpBtfArgs {
    pub const ABSENT: Self = Self {
        sk: ARG_ABSENT,
        skb: ARG_ABSENT,
        location: ARG_ABSENT,
        reason: ARG_ABSENT,
        rx_sk: ARG_ABSENT,
        err: ARG_ABSENT,
    };
}

const _: () = assert!(core::mem::size_of::<TpBtfArgs>() == 24);

/// The record of a `tp_btf` program: the socket's (or the packet's) addresses
/// as the classic tracepoint would have written them into its record.
pub const RECORD_TRACEPOINT: u8 = 0;
/// `record` holds a [`SocketTuple`].
pub const RECORD_SOCKET_TUPLE: u8 = 1;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// What a classic TCP tracepoint computes from the socket, computed by the
/// `tp_btf` program from `sock_common` (or, for a reset without a full
/// socket, from the packet being answered).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketTuple {
    /// `AF_INET`, `AF_INET6`, or 0 when there is no address.
    pub family: u16,
    /// Local and remote port, host order.
    pub sport: u16,
    pub dport: u16,
    /// 1 when `extra` holds an argument (the reset reason, or `err`).
    pub has_extra: u16,
    /// `sk_state`, 0 without a socket.
    pub state: i32,
    pub extra: i32,
    /// Local and remote address (IPv4 in the first 4 bytes).
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

impl SocketTuple {
    pub const AF_INET: u16 = AF_INET;
    pub const AF_INET6: u16 = AF_INET6;
}

const _: () = assert!(core::mem::size_of::<SocketTuple>() == 48);

#[cfg(feature = "user")]
// SAFETY: plain old data: integers and byte arrays, no padding.
unsafe impl aya::Pod for TpBtfArgs {}
