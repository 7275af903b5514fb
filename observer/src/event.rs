//! The agent's event records: what the live view prints and what the JSON
//! lines hold. Shapes are kept flat and stable; every signal adds a variant.

use std::net::IpAddr;

use serde::Serialize;

use crate::cgroup::container::{self, Qos, Runtime};

use crate::netns::NetnsOwner;

/// One observed event, stamped with wall-clock time.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    pub time_unix_nano: u64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind")]
pub enum Event {
    #[serde(rename = "tcp.reset")]
    TcpReset(TcpReset),
    #[serde(rename = "go.gc")]
    GoGc(GoGc),
    #[serde(rename = "net.drop")]
    NetDrop(NetDrop),
    #[serde(rename = "net.drop.summary")]
    NetDropSummary(NetDropSummary),
    #[serde(rename = "tcp.retransmit")]
    TcpRetransmit(TcpRetransmit),
    #[serde(rename = "memcg.events")]
    MemcgEvents(MemcgEvents),
    #[serde(rename = "memcg.oom_kill")]
    MemcgOomKill(MemcgOomKill),
}

/// Who an event belongs to.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Attribution {
    /// cgroup v2 id (the cgroup directory's inode number).
    pub cgroup_id: Option<u64>,
    /// Path below the cgroup2 mount, when the cgroup still exists.
    pub cgroup_path: Option<String>,
    pub cgroup_source: CgroupSource,
    #[serde(flatten)]
    pub workload: Workload,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

/// The container and pod a cgroup path names (all `None` outside containers).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Workload {
    pub container_id: Option<String>,
    pub container_runtime: Option<Runtime>,
    pub k8s_pod_uid: Option<String>,
    pub k8s_pod_qos: Option<Qos>,
}

impl Workload {
    pub fn from_cgroup_path(path: Option<&str>) -> Self {
        let Some(c) = path.and_then(container::parse) else { return Self::default() };
        Self {
            // conmon's processes are the pod's overhead, not the container.
            container_id: c.container_id.filter(|_| !c.conmon),
            container_runtime: Some(c.runtime),
            k8s_pod_uid: c.pod_uid,
            k8s_pod_qos: c.qos,
        }
    }
}

/// Where the cgroup came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupSource {
    /// The socket's owner (`sk->sk_cgrp_data`): right even in softirq context.
    Socket,
    /// The process the event happened in (a uprobe runs in the traced process itself).
    Process,
    /// The cgroup itself: its own files said so (`memory.events`).
    Cgroup,
    /// Looked up in /proc/PID/cgroup after the event.
    Proc,
    /// Not known (a reset sent for a packet that matched no full socket).
    #[default]
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Sent,
    Received,
}

#[derive(Debug, Clone, Serialize)]
pub struct TcpReset {
    pub direction: Direction,
    pub family: &'static str,
    /// For `sent`, the side that sent the RST; for `received`, the socket that got it.
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    pub state: Option<&'static str>,
    pub reason: Option<String>,
    /// Network namespace inode.
    pub netns: u32,
    #[serde(flatten)]
    pub who: Attribution,
}

/// One Go GC cycle of a watched process (at its mark termination).
#[derive(Debug, Clone, Serialize)]
pub struct GoGc {
    /// The cycle's number as `GODEBUG=gctrace=1` prints it; `null` when the
    /// runtime's layout for this Go version is unknown.
    pub cycle: Option<u32>,
    pub go_version: Option<String>,
    pub go_module: Option<String>,
    #[serde(flatten)]
    pub who: Attribution,
}

/// One dropped packet (`skb:kfree_skb`), sent within the kernel's per-second
/// budget; every drop, sent or not, is also in the `net.drop.summary` counts.
#[derive(Debug, Clone, Serialize)]
pub struct NetDrop {
    /// The kernel's `enum skb_drop_reason` name without `SKB_DROP_REASON_`.
    pub reason: String,
    /// Its value on this kernel (differs between kernels).
    pub reason_code: u32,
    /// Where the skb was freed, `function+0xoff` (from /proc/kallsyms).
    pub location: Option<String>,
    /// `ipv4`, `ipv6` or `other`.
    pub family: &'static str,
    /// TCP header flags (`["RST"]`), `null` when not TCP.
    pub tcp_flags: Option<Vec<&'static str>>,
    /// `rst`, `syn`, `tcp` or `non_tcp`: the class the counts are kept by.
    pub flags_class: &'static str,
    /// The packet's own source and destination (ports 0 when not TCP).
    pub src_addr: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_addr: Option<IpAddr>,
    pub dst_port: Option<u16>,
    /// Network namespace inode (of the packet's device, else its socket).
    pub netns: u32,
    /// Who uses that namespace (processes, cgroups, `ip netns` name).
    pub netns_owner: Option<NetnsOwner>,
    /// The socket's owner, when the skb belonged to a full socket.
    #[serde(flatten)]
    pub who: Attribution,
}

/// Drops counted in the kernel per (netns, reason, flags class) since the
/// previous summary of the same key.
#[derive(Debug, Clone, Serialize)]
pub struct NetDropSummary {
    pub netns: u32,
    pub netns_owner: Option<NetnsOwner>,
    pub reason: String,
    pub reason_code: u32,
    pub flags_class: &'static str,
    /// Drops since the previous summary of this key.
    pub count: u64,
    /// Drops of this key since the agent attached.
    pub total: u64,
}

/// One retransmitted skb (`tcp:tcp_retransmit_skb`).
#[derive(Debug, Clone, Serialize)]
pub struct TcpRetransmit {
    pub family: &'static str,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    pub state: Option<&'static str>,
    /// Segments retransmitted (the skb's GSO segment count, at least 1): the
    /// sum over events is what `nstat` `TcpRetransSegs` counts.
    pub segs: u32,
    /// `skb_shinfo(skb)->gso_segs` as read.
    pub gso_segs: u32,
    /// The attempt's error (kernels whose tracepoint has `err`); 0 = sent.
    pub err: Option<i32>,
    pub netns: u32,
    pub netns_owner: Option<NetnsOwner>,
    #[serde(flatten)]
    pub who: Attribution,
}

/// The counters of a cgroup's `memory.events`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemoryEventCounts {
    pub low: u64,
    pub high: u64,
    pub max: u64,
    pub oom: u64,
    pub oom_kill: u64,
    pub oom_group_kill: u64,
}

/// Counters of a cgroup's `memory.events` rose. The file is hierarchical: a
/// parent's counts include its descendants' (`memory.events.local` would not).
#[derive(Debug, Clone, Serialize)]
pub struct MemcgEvents {
    /// `inotify` or `poll`: how the change was noticed.
    pub mechanism: &'static str,
    /// Rise since the previous event of this cgroup (since the agent started
    /// watching, or since the cgroup was created when it appeared later).
    pub delta: MemoryEventCounts,
    /// The file's values as read.
    pub total: MemoryEventCounts,
    /// `memory.current`, `memory.high`, `memory.max` in bytes, read right
    /// after; a limit of `max` (none) is `null`.
    pub memory_current: Option<u64>,
    pub memory_high: Option<u64>,
    pub memory_max: Option<u64>,
    #[serde(flatten)]
    pub who: Attribution,
}

/// A task chosen and killed by the OOM killer (`oom:mark_victim`). `pid`,
/// `comm` and the cgroup fields are the victim's.
#[derive(Debug, Clone, Serialize)]
pub struct MemcgOomKill {
    /// Where `comm` came from: `record`, `task` (the victim was the current
    /// task), `proc`, or `null` when it was gone.
    pub comm_source: Option<&'static str>,
    /// The task the OOM killer ran in (the one that hit the limit).
    pub trigger_pid: u32,
    pub trigger_comm: String,
    /// From the record, on kernels whose tracepoint has them (kB).
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    #[serde(flatten)]
    pub who: Attribution,
}
