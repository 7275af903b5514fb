//! TCP resets sent and received: copy the tracepoint record, attribute it to
//! the socket's owner (not `current`: a reset sent from softirq context runs
//! on whatever task the CPU was interrupted in).

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel_buf,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use observer_common::{
    EventKind, counter,
    tcp::{DIRECTION_RECEIVED, DIRECTION_SENT, RECORD_MAX, ResetTracepointLayout, TcpResetEvent},
};

use crate::{
    kernel::{self, read},
    maps::{EVENTS, count},
};

/// Set by the agent from each tracepoint's `format` file.
#[unsafe(no_mangle)]
static SEND_RESET_LAYOUT: ResetTracepointLayout = ResetTracepointLayout::UNKNOWN;
#[unsafe(no_mangle)]
static RECEIVE_RESET_LAYOUT: ResetTracepointLayout = ResetTracepointLayout::UNKNOWN;

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

#[inline(always)]
fn try_reset(ctx: &TracePointContext, layout: &ResetTracepointLayout, direction: u8) -> Result<(), ()> {
    let Some(mut entry) = EVENTS.reserve::<TcpResetEvent>(0) else {
        count(counter::LOST);
        return Err(());
    };
    let event = entry.as_mut_ptr();
    let record = ctx.as_ptr() as *const u8;
    let off = kernel::offsets();
    let sk = read::<*const u8>(record, layout.skaddr).unwrap_or(core::ptr::null());
    let skb = read::<*const u8>(record, layout.skbaddr).unwrap_or(core::ptr::null());
    let sk_state = kernel::socket_state(&off, sk);
    let sk_full = kernel::is_full_socket(sk_state);
    let sk_owned = sk_full && read::<*const u8>(sk, off.sock_socket).is_some_and(|s| !s.is_null());
    let pid_tgid = bpf_get_current_pid_tgid();
    let task_netns = kernel::task_netns(&off);
    let netns = if !sk.is_null() {
        kernel::socket_netns(&off, sk)
    } else if !skb.is_null() {
        kernel::skb_netns(&off, skb)
    } else {
        task_netns
    };
    let record_len = (layout.record_len as usize).min(RECORD_MAX);
    // SAFETY: `event` points at a reserved, exclusively owned ring buffer slot
    // of the right size; every field is written before submit.
    unsafe {
        (*event).header.kind = EventKind::TcpReset as u32;
        (*event).header.cpu = bpf_get_smp_processor_id();
        (*event).header.ts_ns = bpf_ktime_get_ns();
        (*event).sk_cgroup_id = if sk_full { kernel::socket_cgroup_id(&off, sk) } else { 0 };
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
        let dst = &mut (*event).record;
        let copied = bpf_probe_read_kernel_buf(record, &mut dst[..record_len]).is_ok();
        (*event).record_len = if copied { record_len as u32 } else { 0 };
    }
    entry.submit(0);
    Ok(())
}
