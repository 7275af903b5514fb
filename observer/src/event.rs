//! The agent's event records: what the live view prints and what the JSON
//! lines hold. Shapes are kept flat and stable; every signal adds a variant.

use std::net::IpAddr;

use serde::Serialize;

use crate::cgroup::container::{self, Qos, Runtime};
use crate::process::environ::GoEnv;

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
    #[serde(rename = "go.assist")]
    GoAssist(GoAssist),
    #[serde(rename = "go.heap_grow")]
    GoHeapGrow(GoHeapChange),
    #[serde(rename = "go.scavenge")]
    GoScavenge(GoHeapChange),
    #[serde(rename = "go.scavenge.summary")]
    GoScavengeSummary(GoScavengeSummary),
    #[serde(rename = "go.attach")]
    GoAttach(GoAttach),
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
    #[serde(rename = "memcg.throttle")]
    MemcgThrottle(MemcgThrottle),
    #[serde(rename = "memcg.throttle.idle")]
    MemcgThrottleIdle(MemcgThrottleIdle),
    #[serde(rename = "memcg.reclaim")]
    MemcgReclaim(MemcgReclaim),
    #[serde(rename = "memcg.reclaim.stat")]
    MemcgReclaimStat(MemcgReclaimStat),
    #[serde(rename = "memcg.pressure")]
    MemcgPressure(MemcgPressure),
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

/// One Go GC cycle of a watched process, sent when the cycle ends. Every
/// figure is read from the runtime (what `GODEBUG=gctrace=1` prints); one is
/// `null` when the runtime's layout for this binary does not locate it.
#[derive(Debug, Clone, Serialize)]
pub struct GoGc {
    /// The cycle's number as gctrace prints it (`gc N`).
    pub cycle: Option<u32>,
    /// Start (`work.tSweepTerm`: the first stop of the world) and end
    /// (`work.tEnd`) of the cycle, wall clock.
    pub start_time: Option<String>,
    pub start_unix_nano: Option<u64>,
    pub end_time: Option<String>,
    pub end_unix_nano: Option<u64>,
    /// gctrace's clock triple: sweep termination (stop the world),
    /// concurrent mark, mark termination (stop the world), in ns.
    pub sweep_termination_ns: Option<u64>,
    pub mark_ns: Option<u64>,
    pub mark_termination_ns: Option<u64>,
    /// Live heap when the cycle started (`work.heap0`; gctrace's `A` of `A->B->C MB`).
    pub heap_start_bytes: Option<u64>,
    /// Live heap at mark termination (`work.heap1`; `B`).
    pub heap_end_bytes: Option<u64>,
    /// Heap marked live by the cycle (`work.heap2`; `C`).
    pub heap_marked_bytes: Option<u64>,
    /// The cycle's heap goal (`gcController.lastHeapGoal`; `D MB goal`).
    pub heap_goal_bytes: Option<u64>,
    /// GOGC in effect (`gcController.gcPercent`); -1 when GC is off.
    pub gogc: Option<i32>,
    /// GOMEMLIMIT in effect (`gcController.memoryLimit`), bytes;
    /// 9223372036854775807 (`math.MaxInt64`) when there is no limit.
    pub memory_limit_bytes: Option<i64>,
    /// On the first cycle observed of a process: how many cycles it ran
    /// before (its number less one; 0 for a process watched from its exec).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycles_unseen: Option<u32>,
    #[serde(flatten)]
    pub owner: GoOwner,
}

/// The Go process a `go.*` event happened in.
#[derive(Debug, Clone, Serialize)]
pub struct GoOwner {
    pub go_version: Option<String>,
    pub go_module: Option<String>,
    #[serde(flatten)]
    pub who: Attribution,
}

/// One mark assist: a goroutine that allocated while the GC was marking
/// had to do mark work itself before its allocation could go on (a call of
/// `runtime.gcAssistAlloc` in which `runtime.gcAssistAlloc1` ran: what the
/// execution tracer shows as a mark assist; calls paid entirely with the
/// background workers' spare credit are not assists).
#[derive(Debug, Clone, Serialize)]
pub struct GoAssist {
    /// From the function's entry to its return, including time parked
    /// waiting for background mark work; `null` when the function's returns
    /// cannot be probed (the agent says so once per binary): then each
    /// pass of assist work is one event.
    pub duration_ns: Option<u64>,
    /// The goroutine (`g` address, hex).
    pub goroutine: String,
    /// The thread it ended on.
    pub tid: u32,
    #[serde(flatten)]
    pub owner: GoOwner,
}

/// Bytes the Go heap gained or gave back (`go.heap_grow`, `go.scavenge`).
#[derive(Debug, Clone, Serialize)]
pub struct GoHeapChange {
    /// `go.heap_grow`: what the heap grew by. The page heap had no free run
    /// of pages for an allocation, and `runtime.(*mheap).grow` handed it new
    /// address space (`runtime.(*pageAlloc).grow(base, size)`): whole 4 MiB
    /// chunks, whatever the allocation asked for, mapped but not yet backed
    /// by memory (the runtime counts it as released until pages of it are
    /// used). The sum over a process's events is how much the heap's
    /// `/memory/classes/heap/*` total grew.
    ///
    /// `go.scavenge`: what the runtime handed back to the OS in one call
    /// of `runtime.sysUnusedOS(v, n)` (`madvise`, called only by the
    /// scavenger's `scavengeOne`: the background scavenger, scavenging on
    /// allocation when over the memory limit or heap goal, and
    /// `debug.FreeOSMemory`) of at least 1 MiB, at most 16 a second per CPU;
    /// the other calls are counted in `go.scavenge.summary`.
    pub bytes: u64,
    /// The thread it happened on.
    pub tid: u32,
    #[serde(flatten)]
    pub owner: GoOwner,
}

/// The calls of `runtime.sysUnusedOS` of one process since its previous
/// summary, counted in the kernel: all but those sent as `go.scavenge`
/// events (calls of at least `SCAVENGE_EVENT_MIN_BYTES`, 1 MiB, within 16
/// a second per CPU, and any call that found the kernel's table full):
/// every call is in exactly one of the two. At most one a second per
/// process, when it scavenged; stamped at the last call counted.
#[derive(Debug, Clone, Serialize)]
pub struct GoScavengeSummary {
    /// Calls since the previous summary of the process.
    pub calls: u64,
    /// Bytes they handed back to the OS.
    pub bytes: u64,
    /// Calls (bytes) counted so since the agent attached.
    pub total_calls: u64,
    pub total_bytes: u64,
    #[serde(flatten)]
    pub owner: GoOwner,
}

/// The agent attached to a Go process (once per process, when its probes
/// are live): which binary, how its GC figures are located, and the memory
/// settings the process was started with (its environment). The runtime's
/// effective GOGC and memory limit are on each `go.gc` event.
#[derive(Debug, Clone, Serialize)]
pub struct GoAttach {
    /// The executable as the process names it (`/proc/PID/exe`).
    pub executable: Option<String>,
    /// Where the runtime's struct offsets came from: `dwarf`, `table`, or
    /// `none` (its `go.gc` events carry no figures).
    pub layout: &'static str,
    /// The uprobes its binary has (shared by every process running it).
    pub probes: usize,
    /// How its allocation profile is sampled: `memprofile` (the runtime's
    /// own samples, `runtime.mProf_Malloc`), `spans` (span refills and
    /// large allocations: the linker turned memory profiling off) or `none`.
    pub alloc_sampling: &'static str,
    /// Its executable mappings, read as it was attached: what its profiles'
    /// addresses are resolved with (a short-lived process is gone by the
    /// first drain).
    #[serde(skip)]
    pub mappings: Option<std::sync::Arc<crate::profile::maps::ProcessMaps>>,
    /// `exec`: the kernel watched it from its exec (its binary was probed
    /// already), no cycle missed; `attach`: from when the agent attached.
    pub watched_from: &'static str,
    /// For `attach`: the runtime's cycle counter as read right after the
    /// probes went live (the cycles it ran before, or one more if a cycle
    /// ended in between; the first `go.gc`'s `cycles_unseen` is exact).
    pub cycles_at_attach: Option<u32>,
    #[serde(flatten)]
    pub env: GoEnv,
    #[serde(flatten)]
    pub owner: GoOwner,
}

/// One dropped packet (`skb:kfree_skb`), sent within the kernel's per-second
/// budget; every drop, sent or not, is also in the `net.drop.summary` counts.
#[derive(Debug, Clone, Serialize)]
pub struct NetDrop {
    /// The kernel's `enum skb_drop_reason` name without `SKB_DROP_REASON_`;
    /// on kernels without reasons, the name its location stands for.
    pub reason: String,
    /// Its value on this kernel (differs between kernels); `null` where the
    /// kernel has no reasons.
    pub reason_code: Option<u32>,
    /// `kernel` (its own reason) or `location` (classified by the function
    /// that freed the packet: kernels before 5.17).
    pub reason_source: &'static str,
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
    pub reason_code: Option<u32>,
    pub reason_source: &'static str,
    /// The function that freed them, where the kernel gives no reason (the
    /// counts are then kept per location).
    pub location: Option<String>,
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
    /// sum over events whose `err` is 0 (or absent) is what `nstat`
    /// `TcpRetransSegs` counts (a failed attempt, e.g. -EBUSY, is not).
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
    /// `null` where the file has no such line (kernels before 5.16).
    pub oom_group_kill: Option<u64>,
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
    #[serde(flatten)]
    pub limits: MemcgLimits,
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

/// `memory.current`, `memory.high`, `memory.max` of the event's cgroup in
/// bytes, read by the agent when it handled the event (microseconds to
/// milliseconds after the kernel saw it, not in the kernel at the event); a
/// limit of `max` (none) and an unreadable file are `null`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MemcgLimits {
    pub memory_current: Option<u64>,
    pub memory_high: Option<u64>,
    pub memory_max: Option<u64>,
}

/// A task throttled for its cgroup being over `memory.high`: one call of
/// `mem_cgroup_handle_over_high` that had pages to answer for (it reclaims,
/// then sleeps a penalty that grows with the overage), on the way back to
/// user mode or in a charge. The record's time is the call's end.
///
/// With `mechanism` `vmscan` the throttle is inferred: it is one memcg
/// reclaim run (`vmscan:mm_vmscan_memcg_reclaim_begin/end`) in the task's
/// own context, which covers reclaim done because of `memory.high` and
/// direct reclaim on a charge over `memory.max` alike, and never the penalty
/// sleep; `nr_pages` is then unknown.
#[derive(Debug, Clone, Serialize)]
pub struct MemcgThrottle {
    /// `fentry`, `kprobe` (with their exit probes) or `vmscan` (inferred).
    pub mechanism: &'static str,
    pub inferred: bool,
    /// Time from entry to exit (reclaim + penalty sleep); for `vmscan`, the
    /// reclaim run; `null` when the start was not seen.
    pub duration_ns: Option<u64>,
    /// Pages the task had charged over the limit
    /// (`task_struct.memcg_nr_pages_over_high` at entry), `null` if unknown.
    pub nr_pages: Option<u64>,
    #[serde(flatten)]
    pub limits: MemcgLimits,
    #[serde(flatten)]
    pub who: Attribution,
}

/// Entries to `mem_cgroup_handle_over_high` that had nothing to do (no page
/// over the limit: the kernel calls it on every return to user mode that
/// handles `TIF_NOTIFY_RESUME`), counted in the kernel per cgroup. Entries
/// to the function == `memcg.throttle` events + these counts.
#[derive(Debug, Clone, Serialize)]
pub struct MemcgThrottleIdle {
    pub mechanism: &'static str,
    /// Since the previous summary of this cgroup.
    pub count: u64,
    /// Since the agent attached.
    pub total: u64,
    #[serde(flatten)]
    pub who: Attribution,
}

/// One memcg reclaim run (`vmscan:mm_vmscan_memcg_reclaim_begin` → `_end`),
/// attributed to the task that ran it (see `sources::memcg::kernel`).
#[derive(Debug, Clone, Serialize)]
pub struct MemcgReclaim {
    /// begin → end; `null` when the begin was not seen.
    pub duration_ns: Option<u64>,
    /// `nr_reclaimed` of the end record, in pages.
    pub nr_reclaimed: u64,
    #[serde(flatten)]
    pub limits: MemcgLimits,
    #[serde(flatten)]
    pub who: Attribution,
}

/// The reclaim counters of a cgroup's `memory.stat` rose: the `stat`
/// mechanism of memcg reclaim, a summary per cgroup rather than one event per
/// reclaim run. Hierarchical like the file, and counting every reclaimer
/// (see `sources::memcg::reclaim_stat` for how it differs from
/// `memcg.reclaim`'s `nr_reclaimed`).
#[derive(Debug, Clone, Serialize)]
pub struct MemcgReclaimStat {
    /// `memory.stat`.
    pub mechanism: &'static str,
    /// Rise since the previous event of this cgroup (since the agent started
    /// watching, or since the cgroup was created when it appeared later).
    pub delta: ReclaimStatCounts,
    /// The file's values as read.
    pub total: ReclaimStatCounts,
    #[serde(flatten)]
    pub limits: MemcgLimits,
    #[serde(flatten)]
    pub who: Attribution,
}

/// The reclaim counters of `memory.stat`, in pages. `pgscan`/`pgsteal` are
/// the kernel's sums over every reclaimer (`kswapd` + `direct`, and
/// `khugepaged` from 6.2); a kernel without the summed line gets the sum of
/// the lines it has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReclaimStatCounts {
    pub pgscan: u64,
    pub pgsteal: u64,
    pub pgscan_kswapd: u64,
    pub pgscan_direct: u64,
    pub pgsteal_kswapd: u64,
    pub pgsteal_direct: u64,
}

/// A cgroup's `memory.pressure` (PSI) totals rose: tasks stalled on memory.
#[derive(Debug, Clone, Serialize)]
pub struct MemcgPressure {
    /// `trigger` (a PSI trigger fired, or the last read at stop) or `poll`.
    pub mechanism: &'static str,
    /// `some`/`full` `total=` of the file as read, in microseconds.
    pub some_total_us: u64,
    pub full_total_us: u64,
    /// Rise since the previous event of this cgroup (or since watching began).
    pub some_delta_us: u64,
    pub full_delta_us: u64,
    pub some_avg10: f64,
    pub full_avg10: f64,
    /// The last read as the agent stopped (no trigger fired, no timer ran
    /// out): what stalled since the previous read, however little.
    pub at_stop: bool,
    #[serde(flatten)]
    pub limits: MemcgLimits,
    #[serde(flatten)]
    pub who: Attribution,
}
