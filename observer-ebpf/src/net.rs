//! Packet drops (`skb:kfree_skb`) and TCP retransmits (`tcp:tcp_retransmit_skb`).
//!
//! Drops can come by the million: each one costs a header parse and one
//! atomic add in `DROP_COUNTS`; only a per-CPU, per-second budget of them
//! becomes ring buffer events. Both run in softirq context as often as not,
//! so the owner is the socket's cgroup or the namespace, never `current`.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::{btf_tracepoint, map, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use observer_common::{
    EventKind, OFFSET_UNKNOWN, counter as common_counter,
    net::{
        DropBudget, DropConfig, DropCount, DropKey, FAMILY_IPV4, FAMILY_IPV6, FAMILY_NONE, NO_REASON, NetDropEvent,
        NetOffsets, RetransmitConfig, TCP_RST, TCP_SYN, TcpRetransmitEvent, class, counter,
    },
    tcp::RECORD_MAX,
    tp_btf::{RECORD_SOCKET_TUPLE, RECORD_TRACEPOINT, SocketTuple, TpBtfArgs},
};

use crate::{
    kernel::{self, read},
    maps::{EVENTS, count_lost},
    tp_btf,
};

/// Set by the agent: `skb:kfree_skb` field offsets and reason values.
#[unsafe(no_mangle)]
static DROP_CONFIG: DropConfig = DropConfig::UNKNOWN;
/// Set by the agent: `tcp:tcp_retransmit_skb` field offsets.
#[unsafe(no_mangle)]
static RETRANSMIT_CONFIG: RetransmitConfig = RetransmitConfig::UNKNOWN;
/// Set by the agent from each tracepoint's prototype in BTF.
#[unsafe(no_mangle)]
static DROP_ARGS: TpBtfArgs = TpBtfArgs::ABSENT;
#[unsafe(no_mangle)]
static RETRANSMIT_ARGS: TpBtfArgs = TpBtfArgs::ABSENT;
/// Set by the agent: `sk_buff` offsets from BTF.
#[unsafe(no_mangle)]
static NET_OFFSETS: NetOffsets = NetOffsets::UNKNOWN;

/// Drops per (netns, reason, flags class), per CPU (no atomics on the hot
/// path); the agent sums the CPUs every second.
#[map]
pub static DROP_COUNTS: PerCpuHashMap<DropKey, DropCount> = PerCpuHashMap::with_max_entries(8192, 0);

#[map]
pub static NET_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map]
static DROP_BUDGET: PerCpuArray<DropBudget> = PerCpuArray::with_max_entries(1, 0);

pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
/// `network_header` when the skb has none (`(u16)~0U`).
const HEADER_UNSET: u16 = 0xffff;

#[inline(always)]
fn net_count(index: u32) {
    if let Some(slot) = NET_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn config<T: Copy>(global: &T) -> T {
    // SAFETY: a read of our own read-only global; volatile so the compiler
    // does not fold the default value the agent overrides at load time.
    unsafe { core::ptr::read_volatile(global) }
}

#[tracepoint]
pub fn kfree_skb(ctx: TracePointContext) -> u32 {
    net_count(counter::DROP_SEEN);
    let cfg = config(&DROP_CONFIG);
    let record = ctx.as_ptr() as *const u8;
    // Without a reason field the location tells the drops apart.
    let reason = if cfg.reason == OFFSET_UNKNOWN {
        None
    } else {
        match read::<u32>(record, cfg.reason) {
            Some(r) => Some(r),
            None => return 1,
        }
    };
    let drop = Drop {
        skb: read::<*const u8>(record, cfg.skbaddr).unwrap_or(core::ptr::null()),
        location: read::<u64>(record, cfg.location).unwrap_or(0),
        reason,
        rx_sk: read::<*const u8>(record, cfg.rx_sk).unwrap_or(core::ptr::null()),
        protocol: read::<u16>(record, cfg.protocol).unwrap_or(0),
    };
    match try_kfree_skb(&cfg, &drop) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    net_count(counter::DROP_SEEN);
    let cfg = config(&DROP_CONFIG);
    let args = config(&DROP_ARGS);
    let skb = tp_btf::ptr::<0>(&ctx, args.skb);
    // The tracepoint records `ntohs(skb->protocol)`.
    let protocol = u16::from_be(read::<u16>(skb, config(&NET_OFFSETS).skb_protocol).unwrap_or(0));
    let drop = Drop {
        skb,
        location: tp_btf::arg::<1>(&ctx, args.location).unwrap_or(0),
        reason: tp_btf::arg::<2>(&ctx, args.reason).map(|r| r as u32),
        rx_sk: tp_btf::ptr::<3>(&ctx, args.rx_sk),
        protocol,
    };
    match try_kfree_skb(&cfg, &drop) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// One `kfree_skb` hit, from either program.
struct Drop {
    skb: *const u8,
    location: u64,
    /// `None` on kernels without a reason.
    reason: Option<u32>,
    rx_sk: *const u8,
    /// An `ETH_P_*` value, host order.
    protocol: u16,
}

/// What the packet's headers say.
pub(crate) struct Packet {
    pub(crate) family: u8,
    pub(crate) l4_proto: u8,
    pub(crate) tcp_flags: u8,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) saddr: [u8; 16],
    pub(crate) daddr: [u8; 16],
}

#[inline(always)]
fn try_kfree_skb(cfg: &DropConfig, drop: &Drop) -> Result<(), ()> {
    let (skb, location, protocol) = (drop.skb, drop.location, drop.protocol);
    // Without a reason the location tells the drops apart.
    let (reason, key_location) = match drop.reason {
        None => (NO_REASON, location),
        Some(reason) => (reason, 0),
    };
    if reason == cfg.reason_consumed {
        return Ok(());
    }
    let off = kernel::offsets();
    let net = config(&NET_OFFSETS);
    let pkt = parse(&net, skb, protocol);
    let class = if pkt.l4_proto != IPPROTO_TCP {
        class::NON_TCP
    } else if pkt.tcp_flags & TCP_RST != 0 {
        class::RST
    } else if pkt.tcp_flags & TCP_SYN != 0 {
        class::SYN
    } else {
        class::OTHER_TCP
    };
    let mut sk = read::<*const u8>(skb, net.skb_sk).unwrap_or(core::ptr::null());
    if sk.is_null() {
        sk = drop.rx_sk;
    }
    let mut netns = kernel::skb_netns(&off, skb);
    if netns == 0 && !sk.is_null() {
        netns = kernel::socket_netns(&off, sk);
    }
    aggregate(&DropKey { netns, reason, class, _pad: 0, location: key_location });

    // Unspecified drops are everyday noise: only a dropped RST is worth an event.
    if reason == cfg.reason_not_specified && class != class::RST {
        return Ok(());
    }
    if !within_budget(cfg.events_per_sec) {
        net_count(counter::DROP_EVENTS_UNSENT);
        return Ok(());
    }
    let Some(mut entry) = EVENTS.reserve::<NetDropEvent>(0) else {
        count_lost(common_counter::LOST_NET_DROP);
        return Err(());
    };
    let sk_full = !sk.is_null() && kernel::is_full_socket(kernel::socket_state(&off, sk));
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned ring buffer slot
    // of the right size; every field is written before submit.
    unsafe {
        (*event).header.kind = EventKind::NetDrop as u32;
        (*event).header.cpu = bpf_get_smp_processor_id();
        (*event).header.ts_ns = bpf_ktime_get_ns();
        (*event).location = location;
        (*event).sk_cgroup_id = if sk_full { kernel::socket_cgroup_id(&off, sk) } else { 0 };
        (*event).netns = netns;
        (*event).reason = reason;
        (*event).protocol = protocol;
        (*event).family = pkt.family;
        (*event).l4_proto = pkt.l4_proto;
        (*event).tcp_flags = pkt.tcp_flags;
        (*event).sk_full = sk_full as u8;
        (*event).class = class as u8;
        (*event)._pad = 0;
        (*event).sport = pkt.sport;
        (*event).dport = pkt.dport;
        (*event).saddr = pkt.saddr;
        (*event).daddr = pkt.daddr;
        (*event)._pad2 = 0;
    }
    entry.submit(0);
    net_count(counter::DROP_EVENTS_SENT);
    Ok(())
}

/// One more drop for `key`, created on first sight.
#[inline(always)]
fn aggregate(key: &DropKey) {
    net_count(counter::DROP_COUNTED);
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    for _ in 0..2 {
        if let Some(value) = DROP_COUNTS.get_ptr_mut(key) {
            // SAFETY: this CPU's slot of a live map value; only this CPU
            // writes it while the program runs.
            unsafe {
                (*value).packets += 1;
                (*value).last_ns = now;
            }
            return;
        }
        // Another CPU may insert the same key first (EEXIST): look it up again.
        if DROP_COUNTS.insert(key, &DropCount { packets: 1, last_ns: now }, BPF_NOEXIST as u64).is_ok() {
            return;
        }
    }
    net_count(counter::DROP_AGGREGATE_FULL);
}

/// Whether this CPU may still send a drop event this second.
#[inline(always)]
fn within_budget(per_sec: u32) -> bool {
    let Some(budget) = DROP_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: the helper has no preconditions.
    let second = unsafe { bpf_ktime_get_ns() } / 1_000_000_000;
    // SAFETY: per-CPU slot, only this CPU touches it while the program runs.
    unsafe {
        if (*budget).second != second {
            (*budget).second = second;
            (*budget).sent = 0;
        }
        if (*budget).sent >= u64::from(per_sec) {
            return false;
        }
        (*budget).sent += 1;
    }
    true
}

/// Reads the IPv4/IPv6 and TCP headers from the skb's linear data.
#[inline(always)]
pub(crate) fn parse(net: &NetOffsets, skb: *const u8, protocol: u16) -> Packet {
    let mut pkt =
        Packet { family: FAMILY_NONE, l4_proto: 0, tcp_flags: 0, sport: 0, dport: 0, saddr: [0; 16], daddr: [0; 16] };
    let head = read::<*const u8>(skb, net.skb_head).unwrap_or(core::ptr::null());
    let nh = read::<u16>(skb, net.skb_network_header).unwrap_or(HEADER_UNSET);
    if head.is_null() || nh == HEADER_UNSET {
        return pkt;
    }
    let ip = head.wrapping_add(nh as usize);
    let tcp = match protocol {
        ETH_P_IP => {
            let Ok(h) = read_bytes::<20>(ip) else {
                return pkt;
            };
            if h[0] >> 4 != 4 {
                return pkt;
            }
            pkt.family = FAMILY_IPV4;
            pkt.l4_proto = h[9];
            pkt.saddr[..4].copy_from_slice(&h[12..16]);
            pkt.daddr[..4].copy_from_slice(&h[16..20]);
            ip.wrapping_add(((h[0] & 0x0f) as usize) * 4)
        }
        ETH_P_IPV6 => {
            let Ok(h) = read_bytes::<40>(ip) else {
                return pkt;
            };
            if h[0] >> 4 != 6 {
                return pkt;
            }
            pkt.family = FAMILY_IPV6;
            // Extension headers are not walked: TCP right after the fixed header only.
            pkt.l4_proto = h[6];
            pkt.saddr.copy_from_slice(&h[8..24]);
            pkt.daddr.copy_from_slice(&h[24..40]);
            ip.wrapping_add(40)
        }
        _ => return pkt,
    };
    if pkt.l4_proto != IPPROTO_TCP {
        return pkt;
    }
    let Ok(t) = read_bytes::<14>(tcp) else {
        pkt.l4_proto = 0;
        return pkt;
    };
    pkt.sport = u16::from_be_bytes([t[0], t[1]]);
    pkt.dport = u16::from_be_bytes([t[2], t[3]]);
    pkt.tcp_flags = t[13];
    pkt
}

#[inline(always)]
fn read_bytes<const N: usize>(src: *const u8) -> Result<[u8; N], ()> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel(src as *const [u8; N]) }.map_err(|_| ())
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    net_count(counter::RETRANSMIT_SEEN);
    let cfg = config(&RETRANSMIT_CONFIG);
    let record = ctx.as_ptr() as *const u8;
    let sk = read::<*const u8>(record, cfg.skaddr).unwrap_or(core::ptr::null());
    let skb = read::<*const u8>(record, cfg.skbaddr).unwrap_or(core::ptr::null());
    match try_retransmit(sk, skb, Record::Tracepoint(record, cfg.record_len)) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_btf(ctx: BtfTracePointContext) -> i32 {
    net_count(counter::RETRANSMIT_SEEN);
    let args = config(&RETRANSMIT_ARGS);
    let sk = tp_btf::ptr::<0>(&ctx, args.sk);
    let skb = tp_btf::ptr::<1>(&ctx, args.skb);
    let err = tp_btf::arg::<2>(&ctx, args.err).map(|e| e as i32);
    match try_retransmit(sk, skb, Record::Socket(err)) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// What the retransmit event's `record` holds.
enum Record {
    /// The classic tracepoint's record and its length, copied verbatim.
    Tracepoint(*const u8, u32),
    /// A [`SocketTuple`] built from the socket, with `err` where the kernel has it.
    Socket(Option<i32>),
}

#[inline(always)]
fn try_retransmit(sk: *const u8, skb: *const u8, source: Record) -> Result<(), ()> {
    let Some(mut entry) = EVENTS.reserve::<TcpRetransmitEvent>(0) else {
        count_lost(common_counter::LOST_TCP_RETRANSMIT);
        return Err(());
    };
    let event = entry.as_mut_ptr();
    let off = kernel::offsets();
    let net = config(&NET_OFFSETS);
    let sk_state = kernel::socket_state(&off, sk);
    let sk_full = kernel::is_full_socket(sk_state);
    // The shared info sits at head + end (`end` is an offset on 64-bit).
    let head = read::<*const u8>(skb, net.skb_head).unwrap_or(core::ptr::null());
    let shinfo = match read::<u32>(skb, net.skb_end) {
        Some(end) if !head.is_null() => head.wrapping_add(end as usize),
        _ => core::ptr::null(),
    };
    // SAFETY: `event` points at a reserved, exclusively owned ring buffer slot
    // of the right size; every field is written before submit.
    unsafe {
        (*event).header.kind = EventKind::TcpRetransmit as u32;
        (*event).header.cpu = bpf_get_smp_processor_id();
        (*event).header.ts_ns = bpf_ktime_get_ns();
        (*event).sk_cgroup_id = if sk_full { kernel::socket_cgroup_id(&off, sk) } else { 0 };
        (*event).netns = kernel::socket_netns(&off, sk);
        (*event).cb_segs = read::<u16>(skb, net.skb_tcp_gso_segs).unwrap_or(0);
        (*event).shinfo_segs = read::<u16>(shinfo, net.shinfo_gso_segs).unwrap_or(0);
        (*event).sk_full = sk_full as u8;
        (*event).sk_state = sk_state;
        (*event)._pad = 0;
        match source {
            Record::Tracepoint(record, len) => {
                let record_len = (len as usize).min(RECORD_MAX);
                let dst = &mut (*event).record;
                let copied = bpf_probe_read_kernel_buf(record, &mut dst[..record_len]).is_ok();
                (*event).record_len = if copied { record_len as u32 } else { 0 };
                (*event).record_kind = RECORD_TRACEPOINT;
            }
            Record::Socket(err) => {
                let mut tuple = kernel::socket_tuple(&off, sk, sk_state);
                if let Some(err) = err {
                    tuple.has_extra = 1;
                    tuple.extra = err;
                }
                (*event).record = [0; RECORD_MAX];
                core::ptr::write_unaligned((*event).record.as_mut_ptr() as *mut SocketTuple, tuple);
                (*event).record_len = core::mem::size_of::<SocketTuple>() as u32;
                (*event).record_kind = RECORD_SOCKET_TUPLE;
            }
        }
    }
    entry.submit(0);
    Ok(())
}

/// The `sk_buff` offsets, for other hook areas that parse packets.
#[inline(always)]
pub(crate) fn net_offsets() -> NetOffsets {
    config(&NET_OFFSETS)
}
