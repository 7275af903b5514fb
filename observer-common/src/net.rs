//! Packet drops (`skb:kfree_skb` with its `reason`) and TCP retransmits
//! (`tcp:tcp_retransmit_skb`).
//!
//! Drops are counted in the kernel per (netns, reason, flags class) in
//! `DROP_COUNTS`; individual drop events go through the ring buffer only
//! within a per-CPU, per-second budget. Retransmits copy the tracepoint
//! record (decoded in userspace with the `format` file, like resets) and add
//! the socket's owner and the skb's segment count.

use crate::{EventHeader, OFFSET_UNKNOWN, tcp::RECORD_MAX};

/// Flags classes of the drop aggregate (`DropKey::class`).
pub mod class {
    /// Not a TCP packet (or its headers could not be read).
    pub const NON_TCP: u32 = 0;
    /// TCP with RST set.
    pub const RST: u32 = 1;
    /// TCP with SYN set (and no RST).
    pub const SYN: u32 = 2;
    /// Any other TCP packet.
    pub const OTHER_TCP: u32 = 3;
}

/// Indexes of the per-CPU counters map `NET_COUNTERS`.
pub mod counter {
    /// `skb:kfree_skb` hits (all reasons, before any filtering).
    pub const DROP_SEEN: u32 = 0;
    /// Drops counted in `DROP_COUNTS` (consumed skbs are not drops).
    pub const DROP_COUNTED: u32 = 1;
    /// Drop events sent through the ring buffer.
    pub const DROP_EVENTS_SENT: u32 = 2;
    /// Drops eligible for an event but over the per-second budget.
    pub const DROP_EVENTS_UNSENT: u32 = 3;
    /// Drops not counted because `DROP_COUNTS` was full.
    pub const DROP_AGGREGATE_FULL: u32 = 4;
    /// `tcp:tcp_retransmit_skb` hits.
    pub const RETRANSMIT_SEEN: u32 = 5;
    pub const COUNT: u32 = 6;
}

/// Key of `DROP_COUNTS`; the value is a [`DropCount`].
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// Network namespace inode (0 when unknown).
    pub netns: u32,
    /// `enum skb_drop_reason` value of the running kernel, or [`NO_REASON`].
    pub reason: u32,
    /// One of [`class`].
    pub class: u32,
    pub _pad: u32,
    /// Where the skb was freed, on kernels without a reason field (it then
    /// tells the drops apart); 0 where the kernel gives a reason.
    pub location: u64,
}

const _: () = assert!(core::mem::size_of::<DropKey>() == 24);

/// One CPU's count of a `DROP_COUNTS` key, with the kernel time of its last
/// drop: the agent stamps a summary with that, not with when it read the
/// map, so a late read still falls in the episode of the drops it counts.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCount {
    pub packets: u64,
    /// `bpf_ktime_get_ns()` of the last drop counted on this CPU.
    pub last_ns: u64,
}

/// The reason of a drop on a kernel whose `skb:kfree_skb` has no `reason`
/// field (before 5.17): the agent classifies it by its location instead.
pub const NO_REASON: u32 = u32::MAX - 1;

/// Where `skb:kfree_skb`'s fields are in its record (from the `format` file),
/// and which reasons the program treats specially (from BTF).
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DropConfig {
    pub skbaddr: u32,
    pub location: u32,
    /// `rx_sk` (6.10+), or [`OFFSET_UNKNOWN`].
    pub rx_sk: u32,
    pub protocol: u32,
    /// The `reason` field, or [`OFFSET_UNKNOWN`] on kernels without one.
    pub reason: u32,
    /// `SKB_CONSUMED`: not a drop, neither counted nor sent ([`u32::MAX`] if absent).
    pub reason_consumed: u32,
    /// `SKB_DROP_REASON_NOT_SPECIFIED`: counted, sent only for a TCP RST
    /// ([`NO_REASON`] where there is no reason field).
    pub reason_not_specified: u32,
    /// Drop events each CPU may send per second; the rest are only counted.
    pub events_per_sec: u32,
}

impl DropConfig {
    pub const UNKNOWN: Self = Self {
        skbaddr: OFFSET_UNKNOWN,
        location: OFFSET_UNKNOWN,
        rx_sk: OFFSET_UNKNOWN,
        protocol: OFFSET_UNKNOWN,
        reason: OFFSET_UNKNOWN,
        reason_consumed: u32::MAX,
        reason_not_specified: u32::MAX,
        events_per_sec: 0,
    };
}

const _: () = assert!(core::mem::size_of::<DropConfig>() == 32);

/// `struct sk_buff` offsets the drop and retransmit programs read, from BTF
/// (separate from [`crate::kernel::KernelOffsets`], which the reset
/// programs share). Each is a byte offset or [`OFFSET_UNKNOWN`].
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NetOffsets {
    /// `sk_buff.head` (`unsigned char *`).
    pub skb_head: u32,
    /// `sk_buff.end` (`sk_buff_data_t`: an offset from `head` on 64-bit).
    pub skb_end: u32,
    /// `sk_buff.network_header` (u16, from `head`).
    pub skb_network_header: u32,
    /// `sk_buff.transport_header` (u16, from `head`).
    pub skb_transport_header: u32,
    /// `sk_buff.sk`.
    pub skb_sk: u32,
    /// `sk_buff.cb` + `tcp_skb_cb.tcp_gso_segs` (u16).
    pub skb_tcp_gso_segs: u32,
    /// `skb_shared_info.gso_segs` (u16).
    pub shinfo_gso_segs: u32,
    /// `sk_buff.protocol` (be16): what `skb:kfree_skb` records, for `tp_btf`.
    pub skb_protocol: u32,
}

impl NetOffsets {
    pub const UNKNOWN: Self = Self {
        skb_head: OFFSET_UNKNOWN,
        skb_end: OFFSET_UNKNOWN,
        skb_network_header: OFFSET_UNKNOWN,
        skb_transport_header: OFFSET_UNKNOWN,
        skb_sk: OFFSET_UNKNOWN,
        skb_tcp_gso_segs: OFFSET_UNKNOWN,
        shinfo_gso_segs: OFFSET_UNKNOWN,
        skb_protocol: OFFSET_UNKNOWN,
    };
}

const _: () = assert!(core::mem::size_of::<NetOffsets>() == 32);

/// Per-CPU budget of drop events (`DROP_BUDGET`).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct DropBudget {
    /// `bpf_ktime_get_ns() / 1e9` of the current window.
    pub second: u64,
    /// Events sent in that second.
    pub sent: u64,
}

pub const FAMILY_NONE: u8 = 0;
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// TCP header flag bits (the 13th byte of the header).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct NetDropEvent {
    pub header: EventHeader,
    /// The `location` field: the kernel address that freed the skb.
    pub location: u64,
    /// cgroup v2 id of the owner of `skb->sk` (or `rx_sk`) when it is a full
    /// socket; 0 otherwise.
    pub sk_cgroup_id: u64,
    /// Network namespace inode of the skb's device, else of its socket.
    pub netns: u32,
    pub reason: u32,
    /// The `protocol` field (an `ETH_P_*` value, host order).
    pub protocol: u16,
    /// [`FAMILY_NONE`], [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// IP protocol number (6 = TCP), 0 when unknown.
    pub l4_proto: u8,
    /// TCP header flags (valid when `l4_proto` is 6).
    pub tcp_flags: u8,
    /// 1 when `sk_cgroup_id` is a full socket's owner.
    pub sk_full: u8,
    /// One of [`class`] (as u8).
    pub class: u8,
    pub _pad: u8,
    /// Source and destination ports, host order.
    pub sport: u16,
    pub dport: u16,
    /// Addresses as on the wire (IPv4 in the first 4 bytes).
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub _pad2: u32,
}

const _: () = assert!(core::mem::size_of::<NetDropEvent>() == 16 + 8 + 8 + 4 + 4 + 2 + 6 + 4 + 32 + 4);

/// Where the retransmit program finds its pointers (from the `format` file)
/// and the skb fields that hold the segment count (from BTF).
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RetransmitConfig {
    pub skaddr: u32,
    pub skbaddr: u32,
    pub record_len: u32,
    pub _pad: u32,
}

impl RetransmitConfig {
    pub const UNKNOWN: Self = Self { skaddr: OFFSET_UNKNOWN, skbaddr: OFFSET_UNKNOWN, record_len: 0, _pad: 0 };
}

const _: () = assert!(core::mem::size_of::<RetransmitConfig>() == 16);

#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct TcpRetransmitEvent {
    pub header: EventHeader,
    /// cgroup v2 id of the socket's owner (0 when not a full socket).
    pub sk_cgroup_id: u64,
    /// Network namespace inode of the socket.
    pub netns: u32,
    /// `TCP_SKB_CB(skb)->tcp_gso_segs`: what the kernel adds to
    /// `TcpRetransSegs` for this skb; 0 when unreadable.
    pub cb_segs: u16,
    /// `skb_shinfo(skb)->gso_segs`; 0 when unreadable.
    pub shinfo_segs: u16,
    pub sk_full: u8,
    pub sk_state: u8,
    /// [`crate::tp_btf::RECORD_TRACEPOINT`] or [`crate::tp_btf::RECORD_SOCKET_TUPLE`].
    pub record_kind: u8,
    pub _pad: u8,
    /// Bytes of `record` that were copied.
    pub record_len: u32,
    pub record: [u8; RECORD_MAX],
}

const _: () = assert!(core::mem::size_of::<TcpRetransmitEvent>() == 16 + 8 + 4 + 4 + 4 + 4 + RECORD_MAX);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain old data: integers and byte arrays, padding is explicit.
    unsafe impl aya::Pod for DropKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for DropCount {}
    // SAFETY: as above.
    unsafe impl aya::Pod for DropConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NetOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for DropBudget {}
    // SAFETY: as above.
    unsafe impl aya::Pod for NetDropEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RetransmitConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TcpRetransmitEvent {}
}
