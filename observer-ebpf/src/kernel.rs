//! Reads of kernel structs at offsets the agent resolved from BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use observer_common::{OFFSET_UNKNOWN, kernel::KernelOffsets, tp_btf::SocketTuple};

/// Set by the agent before load.
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::UNKNOWN;

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: a read of our own read-only global; volatile so the compiler
    // does not fold the default value the agent overrides at load time.
    unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) }
}

/// Reads a `T` at `base + offset`, or `None` when either is unknown.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() || offset == OFFSET_UNKNOWN {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const T).ok() }
}

const TCP_TIME_WAIT: u8 = 6;
const TCP_NEW_SYN_RECV: u8 = 12;

/// `sk_fullsock()`: time-wait and request sockets share only `sock_common`.
#[inline(always)]
pub fn is_full_socket(state: u8) -> bool {
    state != 0 && state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV
}

#[inline(always)]
pub fn socket_state(off: &KernelOffsets, sk: *const u8) -> u8 {
    read::<u8>(sk, off.sock_common_state).unwrap_or(0)
}

/// cgroup v2 id of a full socket's owner.
#[inline(always)]
pub fn socket_cgroup_id(off: &KernelOffsets, sk: *const u8) -> u64 {
    let cgroup = read::<*const u8>(sk, off.sock_cgroup).unwrap_or(core::ptr::null());
    let kn = read::<*const u8>(cgroup, off.cgroup_kn).unwrap_or(core::ptr::null());
    read::<u64>(kn, off.kernfs_node_id).unwrap_or(0)
}

#[inline(always)]
fn net_inum(off: &KernelOffsets, net: *const u8) -> u32 {
    read::<u32>(net, off.net_ns_inum).unwrap_or(0)
}

#[inline(always)]
pub fn socket_netns(off: &KernelOffsets, sk: *const u8) -> u32 {
    let net = read::<*const u8>(sk, off.sock_common_net).unwrap_or(core::ptr::null());
    net_inum(off, net)
}

#[inline(always)]
pub fn skb_netns(off: &KernelOffsets, skb: *const u8) -> u32 {
    let dev = read::<*const u8>(skb, off.sk_buff_dev).unwrap_or(core::ptr::null());
    let net = read::<*const u8>(dev, off.net_device_net).unwrap_or(core::ptr::null());
    net_inum(off, net)
}

#[inline(always)]
pub fn task_netns(off: &KernelOffsets) -> u32 {
    // SAFETY: the helper has no preconditions.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let nsproxy = read::<*const u8>(task, off.task_nsproxy).unwrap_or(core::ptr::null());
    let net = read::<*const u8>(nsproxy, off.nsproxy_net_ns).unwrap_or(core::ptr::null());
    net_inum(off, net)
}

/// The socket's addresses as the classic TCP tracepoints record them
/// (`inet_sock`'s source fields, `sock_common`'s others).
#[inline(always)]
pub fn socket_tuple(off: &KernelOffsets, sk: *const u8, state: u8) -> SocketTuple {
    let family = read::<u16>(sk, off.sock_common_family).unwrap_or(0);
    let mut t = SocketTuple {
        family,
        sport: u16::from_be(read::<u16>(sk, off.inet_sock_sport).unwrap_or(0)),
        dport: u16::from_be(read::<u16>(sk, off.sock_common_dport).unwrap_or(0)),
        has_extra: 0,
        state: i32::from(state),
        extra: 0,
        saddr: [0; 16],
        daddr: [0; 16],
    };
    if family == SocketTuple::AF_INET6 {
        t.saddr = read::<[u8; 16]>(sk, off.sock_common_v6_rcv_saddr).unwrap_or([0; 16]);
        t.daddr = read::<[u8; 16]>(sk, off.sock_common_v6_daddr).unwrap_or([0; 16]);
    } else {
        let s = read::<[u8; 4]>(sk, off.inet_sock_saddr).unwrap_or([0; 4]);
        let d = read::<[u8; 4]>(sk, off.sock_common_daddr).unwrap_or([0; 4]);
        t.saddr[..4].copy_from_slice(&s);
        t.daddr[..4].copy_from_slice(&d);
    }
    t
}
