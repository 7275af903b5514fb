//! Kernel struct offsets the agent reads from the running kernel's BTF and
//! hands to the programs as a load-time global (Rust eBPF has no CO-RE field
//! relocations). Each field is a byte offset, or [`crate::OFFSET_UNKNOWN`].

use crate::OFFSET_UNKNOWN;

#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct sock_common.skc_state` (u8).
    pub sock_common_state: u32,
    /// `struct sock_common.skc_net` (a `struct net *`).
    pub sock_common_net: u32,
    /// `struct sock.sk_socket`: NULL once the socket is orphaned (closed by its owner).
    pub sock_socket: u32,
    /// `struct sock.sk_cgrp_data.cgroup` (a `struct cgroup *`), one offset from the socket.
    pub sock_cgroup: u32,
    /// `struct cgroup.kn` (a `struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `struct kernfs_node.id` (u64): what `bpf_get_current_cgroup_id()` returns.
    pub kernfs_node_id: u32,
    /// `struct net.ns.inum` (u32): the network namespace's inode number.
    pub net_ns_inum: u32,
    /// `struct sk_buff.dev` (a `struct net_device *`).
    pub sk_buff_dev: u32,
    /// `struct net_device.nd_net` (a `struct net *`).
    pub net_device_net: u32,
    /// `struct task_struct.nsproxy`.
    pub task_nsproxy: u32,
    /// `struct nsproxy.net_ns`.
    pub nsproxy_net_ns: u32,
    /// `struct sock_common.skc_family` (u16).
    pub sock_common_family: u32,
    /// `struct inet_sock.inet_sport` (be16): the local port, which stays
    /// set after close (unlike `skc_num`), as the tracepoints read it.
    pub inet_sock_sport: u32,
    /// `struct sock_common.skc_dport` (be16).
    pub sock_common_dport: u32,
    /// `struct inet_sock.inet_saddr` and `sock_common.skc_daddr` (be32 each).
    pub inet_sock_saddr: u32,
    pub sock_common_daddr: u32,
    /// `struct sock_common.skc_v6_rcv_saddr` and `.skc_v6_daddr` (16 bytes each).
    pub sock_common_v6_rcv_saddr: u32,
    pub sock_common_v6_daddr: u32,
    pub _pad: u32,
}

impl KernelOffsets {
    pub const UNKNOWN: Self = Self {
        sock_common_state: OFFSET_UNKNOWN,
        sock_common_net: OFFSET_UNKNOWN,
        sock_socket: OFFSET_UNKNOWN,
        sock_cgroup: OFFSET_UNKNOWN,
        cgroup_kn: OFFSET_UNKNOWN,
        kernfs_node_id: OFFSET_UNKNOWN,
        net_ns_inum: OFFSET_UNKNOWN,
        sk_buff_dev: OFFSET_UNKNOWN,
        net_device_net: OFFSET_UNKNOWN,
        task_nsproxy: OFFSET_UNKNOWN,
        nsproxy_net_ns: OFFSET_UNKNOWN,
        sock_common_family: OFFSET_UNKNOWN,
        inet_sock_sport: OFFSET_UNKNOWN,
        sock_common_dport: OFFSET_UNKNOWN,
        inet_sock_saddr: OFFSET_UNKNOWN,
        sock_common_daddr: OFFSET_UNKNOWN,
        sock_common_v6_rcv_saddr: OFFSET_UNKNOWN,
        sock_common_v6_daddr: OFFSET_UNKNOWN,
        _pad: 0,
    };
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 76);

#[cfg(feature = "user")]
// SAFETY: plain old data: only u32 fields, no padding.
unsafe impl aya::Pod for KernelOffsets {}
