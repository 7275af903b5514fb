//! Struct offsets for the programs, resolved from the running kernel's BTF.

use observer_common::{OFFSET_UNKNOWN, kernel::KernelOffsets, net::NetOffsets, process::ExecOffsets};

use super::btf::Btf;

/// Resolves every offset the programs use. A member this kernel lacks stays
/// [`OFFSET_UNKNOWN`] (the programs then skip that read) and is named in the
/// returned list so the agent can say which attribution is missing.
pub fn resolve(btf: &Btf) -> (KernelOffsets, Vec<String>) {
    let mut lookup = Lookup { btf, missing: Vec::new() };
    let mut get = |ty: &str, path: &[&str]| lookup.offset(ty, path);
    let net_ns = get("net", &["ns"]);
    let ns_inum = get("ns_common", &["inum"]);
    let sk_cgrp_data = get("sock", &["sk_cgrp_data"]);
    let cgrp_data_cgroup = get("sock_cgroup_data", &["cgroup"]);
    let offsets = KernelOffsets {
        sock_common_state: get("sock_common", &["skc_state"]),
        sock_common_net: get("sock_common", &["skc_net"]),
        sock_socket: get("sock", &["sk_socket"]),
        sock_cgroup: add(sk_cgrp_data, cgrp_data_cgroup),
        cgroup_kn: get("cgroup", &["kn"]),
        kernfs_node_id: get("kernfs_node", &["id"]),
        net_ns_inum: add(net_ns, ns_inum),
        sk_buff_dev: get("sk_buff", &["dev"]),
        net_device_net: get("net_device", &["nd_net"]),
        task_nsproxy: get("task_struct", &["nsproxy"]),
        nsproxy_net_ns: get("nsproxy", &["net_ns"]),
        sock_common_family: get("sock_common", &["skc_family"]),
        inet_sock_sport: get("inet_sock", &["inet_sport"]),
        sock_common_dport: get("sock_common", &["skc_dport"]),
        inet_sock_saddr: get("inet_sock", &["inet_saddr"]),
        sock_common_daddr: get("sock_common", &["skc_daddr"]),
        sock_common_v6_rcv_saddr: get("sock_common", &["skc_v6_rcv_saddr"]),
        sock_common_v6_daddr: get("sock_common", &["skc_v6_daddr"]),
        _pad: 0,
    };
    (offsets, lookup.missing)
}

/// The `sk_buff` offsets of the drop and retransmit programs, like [`resolve`].
pub fn resolve_net(btf: &Btf) -> (NetOffsets, Vec<String>) {
    let mut lookup = Lookup { btf, missing: Vec::new() };
    let mut get = |ty: &str, path: &[&str]| lookup.offset(ty, path);
    let cb = get("sk_buff", &["cb"]);
    let tcp_gso_segs = get("tcp_skb_cb", &["tcp_gso_segs"]);
    let offsets = NetOffsets {
        skb_head: get("sk_buff", &["head"]),
        skb_end: get("sk_buff", &["end"]),
        skb_network_header: get("sk_buff", &["network_header"]),
        skb_transport_header: get("sk_buff", &["transport_header"]),
        skb_sk: get("sk_buff", &["sk"]),
        skb_tcp_gso_segs: add(cb, tcp_gso_segs),
        shinfo_gso_segs: get("skb_shared_info", &["gso_segs"]),
        skb_protocol: get("sk_buff", &["protocol"]),
    };
    (offsets, lookup.missing)
}

/// The offsets of the exec program (the new image's file and load address), like [`resolve`].
pub fn resolve_exec(btf: &Btf) -> (ExecOffsets, Vec<String>) {
    let mut lookup = Lookup { btf, missing: Vec::new() };
    let mut get = |ty: &str, path: &[&str]| lookup.offset(ty, path);
    let offsets = ExecOffsets {
        task_mm: get("task_struct", &["mm"]),
        mm_exe_file: get("mm_struct", &["exe_file"]),
        mm_start_code: get("mm_struct", &["start_code"]),
        file_inode: get("file", &["f_inode"]),
        inode_ino: get("inode", &["i_ino"]),
        inode_sb: get("inode", &["i_sb"]),
        super_block_dev: get("super_block", &["s_dev"]),
        task_signal: get("task_struct", &["signal"]),
        signal_live: get("signal_struct", &["live"]),
        _pad: 0,
    };
    (offsets, lookup.missing)
}

/// Member offsets from BTF, remembering which ones this kernel lacks.
struct Lookup<'a> {
    btf: &'a Btf,
    missing: Vec<String>,
}

impl Lookup<'_> {
    fn offset(&mut self, ty: &str, path: &[&str]) -> u32 {
        self.btf.member_offset(ty, path).unwrap_or_else(|err| {
            self.missing.push(err.to_string());
            OFFSET_UNKNOWN
        })
    }
}

fn add(a: u32, b: u32) -> u32 {
    if a == OFFSET_UNKNOWN || b == OFFSET_UNKNOWN { OFFSET_UNKNOWN } else { a + b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offset_resolves_on_this_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("SKIPPED: no kernel BTF on this machine");
            return;
        };
        let (offsets, missing) = resolve(&btf);
        assert!(missing.is_empty(), "{missing:?}");
        // `skc_net` is a `possible_net_t`, a struct holding only the pointer.
        assert_ne!(offsets.sock_cgroup, OFFSET_UNKNOWN);
        assert_ne!(offsets.net_ns_inum, OFFSET_UNKNOWN);
        let (exec, missing) = resolve_exec(&btf);
        assert!(missing.is_empty(), "{missing:?}");
        assert!(exec.task_mm != OFFSET_UNKNOWN && exec.super_block_dev != OFFSET_UNKNOWN);
        assert!(exec.task_signal != OFFSET_UNKNOWN && exec.signal_live != OFFSET_UNKNOWN);
        let (net, missing) = resolve_net(&btf);
        assert!(missing.is_empty(), "{missing:?}");
        // `tcp_skb_cb` lives in `sk_buff.cb`, which is 48 bytes.
        assert!(net.skb_tcp_gso_segs > net.skb_sk, "{net:?}");
    }
}
