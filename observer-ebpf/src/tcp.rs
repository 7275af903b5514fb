//! TCP resets sent and received: copy the tracepoint record, attribute it to
//! the socket's owner (not `current`: a reset sent from softirq context runs
//! on whatever task the CPU was interrupted in).

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id,
        bpf_ktime_get_ns, bpf_probe_read_kernel_buf,
    },
    macros::{btf_tracepoint, fentry, kprobe, tracepoint},
    maps::ring_buf::RingBufEntry,
    programs::{BtfTracePointContext, FEntryContext, ProbeContext, TracePointContext},
};
use observer_common::{
    EventKind, counter,
    kernel::KernelOffsets,
    net::{FAMILY_NONE, TCP_RST},
    tcp::{
        DIRECTION_RECEIVED, DIRECTION_SENT, DIRECTION_SENT_NO_SOCKET, PacketTuple, RECORD_MAX, ResetTracepointLayout,
        TcpResetEvent,
    },
    tp_btf::{RECORD_SOCKET_TUPLE, RECORD_TRACEPOINT, SocketTuple, TpBtfArgs},
};

use crate::{
    kernel::{self, read},
    maps::{EVENTS, count, count_lost},
    net::{self, ETH_P_IP, ETH_P_IPV6},
    tp_btf,
};

/// Set by the agent from each tracepoint's `format` file.
#[unsafe(no_mangle)]
static SEND_RESET_LAYOUT: ResetTracepointLayout = ResetTracepointLayout::UNKNOWN;
#[unsafe(no_mangle)]
static RECEIVE_RESET_LAYOUT: ResetTracepointLayout = ResetTracepointLayout::UNKNOWN;

/// Set by the agent from each tracepoint's prototype in BTF.
#[unsafe(no_mangle)]
static SEND_RESET_ARGS: TpBtfArgs = TpBtfArgs::ABSENT;
#[unsafe(no_mangle)]
static RECEIVE_RESET_ARGS: TpBtfArgs = TpBtfArgs::ABSENT;

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset_btf(ctx: BtfTracePointContext) -> i32 {
    count(counter::RESET_SENT_SEEN);
    let args = tp_btf::config(&SEND_RESET_ARGS);
    match try_reset_btf(&ctx, &args, DIRECTION_SENT) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset_btf(ctx: BtfTracePointContext) -> i32 {
    count(counter::RESET_RECEIVED_SEEN);
    let args = tp_btf::config(&RECEIVE_RESET_ARGS);
    match try_reset_btf(&ctx, &args, DIRECTION_RECEIVED) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    count(counter::RESET_SENT_SEEN);
    // SAFETY: read of our own read-only global (see kernel::offsets).
    let layout = unsafe { core::ptr::read_volatile(&SEND_RESET_LAYOUT) };
    match try_reset(&ctx, &layout, DIRECTION_SENT) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    count(counter::RESET_RECEIVED_SEEN);
    // SAFETY: read of our own read-only global (see kernel::offsets).
    let layout = unsafe { core::ptr::read_volatile(&RECEIVE_RESET_LAYOUT) };
    match try_reset(&ctx, &layout, DIRECTION_RECEIVED) {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// Before 6.10, `tcp:tcp_send_reset` fires only for full sockets: a reset sent
/// for a packet with no socket (a closed port) or a time-wait socket is missed
/// (measured on Debian 6.1). These hooks on the senders' entry fill exactly
/// that gap; the agent attaches them only on such kernels.
#[fentry(function = "tcp_v4_send_reset")]
pub fn tcp_v4_send_reset_fentry(ctx: FEntryContext) -> i32 {
    // Arguments 0 and 1 of tcp_v4_send_reset are `sk` and `skb`.
    let (sk, skb) = (ctx.arg::<*const u8>(0), ctx.arg::<*const u8>(1));
    no_socket_reset(sk, skb, ETH_P_IP)
}

#[fentry(function = "tcp_v6_send_reset")]
pub fn tcp_v6_send_reset_fentry(ctx: FEntryContext) -> i32 {
    // Arguments 0 and 1 of tcp_v6_send_reset are `sk` and `skb`.
    let (sk, skb) = (ctx.arg::<*const u8>(0), ctx.arg::<*const u8>(1));
    no_socket_reset(sk, skb, ETH_P_IPV6)
}

#[kprobe]
pub fn tcp_v4_send_reset_kprobe(ctx: ProbeContext) -> u32 {
    let sk = ctx.arg::<*const u8>(0).unwrap_or(core::ptr::null());
    let skb = ctx.arg::<*const u8>(1).unwrap_or(core::ptr::null());
    no_socket_reset(sk, skb, ETH_P_IP) as u32
}

#[kprobe]
pub fn tcp_v6_send_reset_kprobe(ctx: ProbeContext) -> u32 {
    let sk = ctx.arg::<*const u8>(0).unwrap_or(core::ptr::null());
    let skb = ctx.arg::<*const u8>(1).unwrap_or(core::ptr::null());
    no_socket_reset(sk, skb, ETH_P_IPV6) as u32
}

#[inline(always)]
fn no_socket_reset(sk: *const u8, skb: *const u8, protocol: u16) -> i32 {
    let off = kernel::offsets();
    let sk_state = kernel::socket_state(&off, sk);
    // Full sockets: the tracepoint reports those.
    if !sk.is_null() && kernel::is_full_socket(sk_state) {
        return 0;
    }
    let pkt = net::parse(&net::net_offsets(), skb, protocol);
    // "Never send a reset in response to a reset": the kernel returns early.
    if pkt.family == FAMILY_NONE || pkt.tcp_flags & TCP_RST != 0 {
        return 0;
    }
    count(counter::RESET_SENT_SEEN);
    let Some(mut entry) = EVENTS.reserve::<TcpResetEvent>(0) else {
        count_lost(counter::LOST_TCP_RESET_SENT);
        return 1;
    };
    let event = entry.as_mut_ptr();
    let task_netns = kernel::task_netns(&off);
    let netns = if sk.is_null() { kernel::skb_netns(&off, skb) } else { kernel::socket_netns(&off, sk) };
    let tuple = PacketTuple {
        family: pkt.family,
        _pad: 0,
        sport: pkt.sport,
        dport: pkt.dport,
        _pad2: 0,
        saddr: pkt.saddr,
        daddr: pkt.daddr,
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: `event` points at a reserved, exclusively owned ring buffer slot
    // of the right size; every field is written before submit.
    unsafe {
        (*event).header.kind = EventKind::TcpReset as u32;
        (*event).header.cpu = bpf_get_smp_processor_id();
        (*event).header.ts_ns = bpf_ktime_get_ns();
        (*event).sk_cgroup_id = 0;
        (*event).task_cgroup_id = bpf_get_current_cgroup_id();
        (*event).netns = netns;
        (*event).task_netns = task_netns;
        (*event).pid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
        (*event).direction = DIRECTION_SENT_NO_SOCKET;
        (*event).sk_full = 0;
        (*event).sk_state = sk_state;
        (*event).sk_owned = 0;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*event).record = [0; RECORD_MAX];
        core::ptr::write_unaligned((*event).record.as_mut_ptr() as *mut PacketTuple, tuple);
        (*event).record_len = core::mem::size_of::<PacketTuple>() as u32;
        (*event).record_kind = RECORD_TRACEPOINT as u32;
        (*event)._pad = 0;
    }
    entry.submit(crate::maps::submit_flags());
    0
}

#[inline(always)]
fn try_reset(ctx: &TracePointContext, layout: &ResetTracepointLayout, direction: u8) -> Result<(), ()> {
    let Some(mut entry) = reserve_reset(direction) else { return Err(()) };
    let event = entry.as_mut_ptr();
    let record = ctx.as_ptr() as *const u8;
    let off = kernel::offsets();
    let sk = read::<*const u8>(record, layout.skaddr).unwrap_or(core::ptr::null());
    let skb = read::<*const u8>(record, layout.skbaddr).unwrap_or(core::ptr::null());
    let sk_state = kernel::socket_state(&off, sk);
    reset_common(event, &off, sk, skb, sk_state, direction);
    let record_len = (layout.record_len as usize).min(RECORD_MAX);
    // SAFETY: as in `reset_common`.
    unsafe {
        let dst = &mut (*event).record;
        let copied = bpf_probe_read_kernel_buf(record, &mut dst[..record_len]).is_ok();
        (*event).record_len = if copied { record_len as u32 } else { 0 };
        (*event).record_kind = RECORD_TRACEPOINT as u32;
        (*event)._pad = 0;
    }
    entry.submit(crate::maps::submit_flags());
    Ok(())
}

/// A ring buffer slot for a reset event, or the loss counted.
#[inline(always)]
fn reserve_reset(direction: u8) -> Option<RingBufEntry<TcpResetEvent>> {
    let entry = EVENTS.reserve::<TcpResetEvent>(0);
    if entry.is_none() {
        count_lost(if direction == DIRECTION_SENT {
            counter::LOST_TCP_RESET_SENT
        } else {
            counter::LOST_TCP_RESET_RECEIVED
        });
    }
    entry
}

/// Everything of a reset event but its record: who, where, which socket.
#[inline(always)]
fn reset_common(
    event: *mut TcpResetEvent,
    off: &KernelOffsets,
    sk: *const u8,
    skb: *const u8,
    sk_state: u8,
    direction: u8,
) {
    let sk_full = kernel::is_full_socket(sk_state);
    let sk_owned = sk_full && read::<*const u8>(sk, off.sock_socket).is_some_and(|s| !s.is_null());
    let pid_tgid = bpf_get_current_pid_tgid();
    let task_netns = kernel::task_netns(off);
    let netns = if !sk.is_null() {
        kernel::socket_netns(off, sk)
    } else if !skb.is_null() {
        kernel::skb_netns(off, skb)
    } else {
        task_netns
    };
    // SAFETY: `event` points at a reserved, exclusively owned ring buffer slot
    // of the right size; the caller writes the rest before submit.
    unsafe {
        (*event).header.kind = EventKind::TcpReset as u32;
        (*event).header.cpu = bpf_get_smp_processor_id();
        (*event).header.ts_ns = bpf_ktime_get_ns();
        (*event).sk_cgroup_id = if sk_full { kernel::socket_cgroup_id(off, sk) } else { 0 };
        (*event).task_cgroup_id = bpf_get_current_cgroup_id();
        (*event).netns = netns;
        (*event).task_netns = task_netns;
        (*event).pid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
        (*event).direction = direction;
        (*event).sk_full = sk_full as u8;
        (*event).sk_state = sk_state;
        (*event).sk_owned = sk_owned as u8;
        (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
}

/// The `tp_btf` programs: what the classic tracepoint would have recorded,
/// from the socket (or, for a reset without a full socket on 6.10+, from
/// the packet it answers), as a [`SocketTuple`].
#[inline(always)]
fn try_reset_btf(ctx: &BtfTracePointContext, args: &TpBtfArgs, direction: u8) -> Result<(), ()> {
    let Some(mut entry) = reserve_reset(direction) else { return Err(()) };
    let event = entry.as_mut_ptr();
    let off = kernel::offsets();
    let sk = tp_btf::ptr::<0>(ctx, args.sk);
    let skb = tp_btf::ptr::<1>(ctx, args.skb);
    let sk_state = kernel::socket_state(&off, sk);
    let sk_full = kernel::is_full_socket(sk_state);
    let mut tuple = if sk_full { kernel::socket_tuple(&off, sk, sk_state) } else { answered_packet(skb, sk_state) };
    if let Some(reason) = tp_btf::arg::<2>(ctx, args.reason) {
        tuple.has_extra = 1;
        tuple.extra = reason as i32;
    }
    reset_common(event, &off, sk, skb, sk_state, direction);
    // SAFETY: as in `reset_common`.
    unsafe {
        (*event).record = [0; RECORD_MAX];
        core::ptr::write_unaligned((*event).record.as_mut_ptr() as *mut SocketTuple, tuple);
        (*event).record_len = core::mem::size_of::<SocketTuple>() as u32;
        (*event).record_kind = RECORD_SOCKET_TUPLE as u32;
        (*event)._pad = 0;
    }
    entry.submit(crate::maps::submit_flags());
    Ok(())
}

/// A reset answering `skb`: its 4-tuple reversed (the reset's sender is the
/// packet's destination), as `tcp:tcp_send_reset` records it since 6.10.
#[inline(always)]
fn answered_packet(skb: *const u8, sk_state: u8) -> SocketTuple {
    let net = net::net_offsets();
    let protocol = u16::from_be(read::<u16>(skb, net.skb_protocol).unwrap_or(0));
    let pkt = net::parse(&net, skb, protocol);
    let family = match pkt.family {
        observer_common::net::FAMILY_IPV4 => SocketTuple::AF_INET,
        observer_common::net::FAMILY_IPV6 => SocketTuple::AF_INET6,
        _ => 0,
    };
    SocketTuple {
        family,
        sport: pkt.dport,
        dport: pkt.sport,
        has_extra: 0,
        state: i32::from(sk_state),
        extra: 0,
        saddr: pkt.daddr,
        daddr: pkt.saddr,
    }
}
