//! Every attribute observer puts on a trace, in one place: the names (the
//! OpenTelemetry semantic conventions' where one exists, `observer.` for the
//! rest), what each record field becomes, and the README's table (`TABLE`,
//! checked against what the mapping emits by tests; test-only, so the agent's
//! binary carries no copy of the documentation).

use opentelemetry::{KeyValue, Value};

use crate::{
    cgroup::container::{Qos, Runtime},
    correlate::episode::{Episode, Folded},
    event::{Attribution, Direction, Event, MemcgLimits, MemoryEventCounts, ReclaimStatCounts, Record},
    process::environ::{EnvironRead, GoEnv},
    workload::Identity,
};

pub const HOST_NAME: &str = "host.name";
pub const SERVICE_NAME: &str = "service.name";
/// The spec's value when a service has no name.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

#[cfg(test)]
/// One row of the README's attribute table.
#[derive(Clone, Copy, Debug)]
pub struct AttrDoc {
    /// `<…>` marks a part filled in per value (`observer.count.<signal>`).
    pub name: &'static str,
    /// `resource`, `root`, a child span's name, or `<kind>.folded`.
    pub on: &'static str,
    pub ty: &'static str,
    pub meaning: &'static str,
}

#[cfg(test)]
const fn doc(name: &'static str, on: &'static str, ty: &'static str, meaning: &'static str) -> AttrDoc {
    AttrDoc { name, on, ty, meaning }
}

#[cfg(test)]
const CHILDREN_WITH_PID: &str = "children (not memcg.oom_kill)";
#[cfg(test)]
const TCP_SPANS: &str = "tcp.reset, tcp.retransmit";
#[cfg(test)]
const MEMCG_SPANS: &str = "memcg.* children (not memcg.oom_kill)";

#[cfg(test)]
/// The README table, row by row.
pub const TABLE: &[AttrDoc] = &[
    // Resource: the observed workload.
    doc(
        "service.name",
        "resource",
        "string",
        "the workload's service: its process's `OTEL_SERVICE_NAME`, else `service.name` in its `OTEL_RESOURCE_ATTRIBUTES`, else (a pod's) the annotation `resource.opentelemetry.io/service.name`, the label `app.kubernetes.io/instance`, the label `app.kubernetes.io/name`, the owner's name, the pod's name, else the container's or executable's name (`unknown_service` when none)",
    ),
    doc(
        "host.name",
        "resource",
        "string",
        "the node: `host.name` in the agent's `OTEL_RESOURCE_ATTRIBUTES`, else the agent's host name",
    ),
    doc("container.id", "resource", "string", "the container's id (from the cgroup path)"),
    doc(
        "container.runtime.name",
        "resource",
        "string",
        "`containerd`, `cri-o` or `docker` (absent when the path does not say)",
    ),
    doc("k8s.pod.uid", "resource", "string", "the pod's uid (from the cgroup path)"),
    doc("k8s.pod.name", "resource", "string", "the pod's name (when Kubernetes metadata is known)"),
    doc("k8s.namespace.name", "resource", "string", "the pod's namespace (when Kubernetes metadata is known)"),
    doc(
        "k8s.container.name",
        "resource",
        "string",
        "the container's name in its pod (by the container id in `status.containerStatuses`)",
    ),
    doc("k8s.node.name", "resource", "string", "the pod's node (`spec.nodeName`)"),
    doc(
        "k8s.<owner kind>.name",
        "resource",
        "string",
        "the pod's owner: `k8s.deployment.name` (from a ReplicaSet's name less its `pod-template-hash`) with `k8s.replicaset.name`, `k8s.statefulset.name`, `k8s.daemonset.name`, `k8s.job.name`, …",
    ),
    doc("k8s.cluster.name", "resource", "string", "`--cluster-name` (unless `OTEL_RESOURCE_ATTRIBUTES` sets it)"),
    doc("process.pid", "resource", "int", "single-process workload: its pid"),
    doc("process.executable.name", "resource", "string", "single-process workload: its executable's file name"),
    doc("process.runtime.name", "resource", "string", "single-process Go workload: `go`"),
    doc(
        "process.runtime.version",
        "resource",
        "string",
        "single-process Go workload: its Go version (`go1.26.8`, as `runtime.Version()`)",
    ),
    doc(
        "<OTEL_RESOURCE_ATTRIBUTES key>",
        "resource",
        "string",
        "each of the agent's `OTEL_RESOURCE_ATTRIBUTES` (node-level); the workload's own attributes win",
    ),
    // Root span.
    doc("observer.episode.kind", "root", "string", "`memory.pressure` or `tcp.reset.burst` (also the span's name)"),
    doc("observer.episode.close_reason", "root", "string", "`quiet`, `oom_kill`, `max_length` or `shutdown`"),
    doc("observer.cgroup.path", "root", "string", "the workload's cgroup, below the cgroup2 mount"),
    doc(
        "observer.profile.cpu.file",
        "root",
        "string",
        "the episode's CPU profile (gzipped pprof), inside the output directory: `profiles/<trace id>.cpu.pb.gz`",
    ),
    doc("observer.profile.cpu.id", "root", "string", "its profile id (32 hex digits)"),
    doc("observer.profile.cpu.samples", "root", "int", "CPU samples in it"),
    doc(
        "observer.profile.alloc.file",
        "root",
        "string",
        "the episode's allocation profile (gzipped pprof): `profiles/<trace id>.alloc.pb.gz`",
    ),
    doc("observer.profile.alloc.id", "root", "string", "its profile id (32 hex digits)"),
    doc("observer.profile.alloc.samples", "root", "int", "allocation samples in it (before scaling)"),
    doc("observer.cgroup.id", "root", "int", "its cgroup id (the directory's inode)"),
    doc("observer.netns", "root", "int", "network namespace inode, for a workload known only by its namespace"),
    doc("observer.k8s.pod.qos", "root", "string", "`guaranteed`, `burstable` or `besteffort`"),
    doc(
        "observer.memory.high.open",
        "root",
        "int",
        "the cgroup's `memory.high` at the first signal, bytes (absent: no limit, or not read)",
    ),
    doc("observer.memory.max.open", "root", "int", "its `memory.max` at the first signal, bytes"),
    doc(
        "observer.memory.high.close",
        "root",
        "int",
        "its `memory.high` as the last record before the close read it, bytes",
    ),
    doc(
        "observer.memory.max.close",
        "root",
        "int",
        "its `memory.max` as the last record before the close read it, bytes",
    ),
    doc(
        "observer.count.<signal>",
        "root",
        "int",
        "exact count per signal, whether it became spans, a folded aggregate or a count only: `memory_events.{high,max,low,oom,oom_kill,oom_group_kill}`, `memcg.throttle`, `memcg.reclaim`, `memory.pressure.{some,full}_us`, `oom_kill`, `go.gc`, `go.assist`, `go.heap_grow.bytes`, `go.scavenge.bytes`, `tcp.reset.{sent,received}`, `net.drop.<reason>`, `tcp.retransmit.segments`",
    ),
    doc(
        "observer.go.env.environ",
        "root",
        "string",
        "whether the Go process's `/proc/PID/environ` was `read` whole when the agent attached, `truncated` (over 64 KiB: a variable past the cut is unknown) or `unreadable` (the process exited, no permission); for a cgroup workload, of its Go process attached last",
    ),
    doc(
        "observer.go.env.gogc",
        "root",
        "string",
        "its `GOGC` as set (absent: not set); in effect: `observer.go.gc.gogc`",
    ),
    doc(
        "observer.go.env.gomemlimit",
        "root",
        "string",
        "its `GOMEMLIMIT` as set; in effect: `observer.go.gc.memory_limit_bytes`",
    ),
    doc(
        "observer.go.env.godebug",
        "root",
        "string",
        "its `GODEBUG` as set (`madvdontneed`, `gctrace`, …; at most 1024 bytes, control characters escaped)",
    ),
    doc(
        "(link)",
        "root",
        "span link",
        "to the root of the episode this one continues (the one before reached its maximum length)",
    ),
    doc(
        "(status)",
        "root, memcg.oom_kill",
        "status",
        "ERROR when an OOM kill closed the episode / for the kill itself, with a message naming the victim",
    ),
    // Every child that has them.
    doc("process.pid", CHILDREN_WITH_PID, "int", "the process the event happened in"),
    doc("observer.comm", CHILDREN_WITH_PID, "string", "its comm"),
    doc(
        "observer.cgroup.source",
        "children",
        "string",
        "where the cgroup came from: `socket`, `process`, `cgroup`, `proc`",
    ),
    doc(
        "observer.memory.current",
        MEMCG_SPANS,
        "int",
        "the cgroup's `memory.current` as read when the event was handled, bytes",
    ),
    doc("observer.memory.high", MEMCG_SPANS, "int", "its `memory.high`, bytes (absent: no limit)"),
    doc("observer.memory.max", MEMCG_SPANS, "int", "its `memory.max`, bytes (absent: no limit)"),
    // go.gc
    doc(
        "observer.go.gc.cycle",
        "go.gc",
        "int",
        "the cycle's number (gctrace's `gc N`); the span runs from its first stop of the world to its end",
    ),
    doc(
        "observer.go.gc.cycles_unseen",
        "go.gc",
        "int",
        "on the first cycle observed of a process: how many cycles it ran before (0 when it was watched from its exec)",
    ),
    doc(
        "observer.go.gc.sweep_termination_ns",
        "go.gc",
        "int",
        "gctrace's clock triple: sweep termination (stop the world), ns",
    ),
    doc("observer.go.gc.mark_ns", "go.gc", "int", "concurrent mark, ns"),
    doc("observer.go.gc.mark_termination_ns", "go.gc", "int", "mark termination (stop the world), ns"),
    doc(
        "observer.go.gc.heap_start_bytes",
        "go.gc",
        "int",
        "live heap when the cycle started (gctrace's A of A->B->C MB)",
    ),
    doc("observer.go.gc.heap_end_bytes", "go.gc", "int", "live heap at mark termination (B)"),
    doc("observer.go.gc.heap_marked_bytes", "go.gc", "int", "heap marked live (C)"),
    doc("observer.go.gc.heap_goal_bytes", "go.gc", "int", "the cycle's heap goal (D MB goal)"),
    doc("observer.go.gc.gogc", "go.gc", "int", "GOGC in effect (-1: off)"),
    doc("observer.go.gc.memory_limit_bytes", "go.gc", "int", "GOMEMLIMIT in effect (9223372036854775807: none)"),
    // go.assist, heap changes
    doc(
        "observer.go.assist.duration_ns",
        "go.assist",
        "int",
        "entry to return of the assist, ns (absent when returns cannot be probed)",
    ),
    doc("observer.go.assist.goroutine", "go.assist", "string", "the goroutine (`g` address, hex)"),
    doc("thread.id", "go.assist, go.heap_grow, go.scavenge", "int", "the thread it ran on"),
    doc("observer.go.heap_grow.bytes", "go.heap_grow", "int", "what the heap grew by"),
    doc("observer.go.scavenge.bytes", "go.scavenge", "int", "what the runtime returned to the OS"),
    doc(
        "observer.go.scavenge.summary.calls",
        "go.scavenge.summary",
        "int",
        "calls since the previous summary, counted in the kernel (those not sent as `go.scavenge` events)",
    ),
    doc("observer.go.scavenge.summary.bytes", "go.scavenge.summary", "int", "what those calls returned to the OS"),
    // memcg
    doc("observer.memcg.throttle.mechanism", "memcg.throttle", "string", "`fentry`, `kprobe` or `vmscan` (inferred)"),
    doc("observer.memcg.throttle.inferred", "memcg.throttle", "bool", "true when inferred from a reclaim run"),
    doc(
        "observer.memcg.throttle.duration_ns",
        "memcg.throttle",
        "int",
        "entry to exit of `mem_cgroup_handle_over_high` (reclaim + penalty sleep), ns",
    ),
    doc("observer.memcg.throttle.nr_pages", "memcg.throttle", "int", "pages the task had charged over `memory.high`"),
    doc("observer.memcg.throttle.idle.mechanism", "memcg.throttle.idle", "string", "how throttling is seen"),
    doc(
        "observer.memcg.throttle.idle.count",
        "memcg.throttle.idle",
        "int",
        "calls with nothing to do since the previous summary",
    ),
    doc("observer.memcg.throttle.idle.total", "memcg.throttle.idle", "int", "such calls since the agent attached"),
    doc("observer.memcg.reclaim.duration_ns", "memcg.reclaim", "int", "the reclaim run, ns"),
    doc("observer.memcg.reclaim.nr_reclaimed", "memcg.reclaim", "int", "pages reclaimed"),
    doc(
        "observer.memcg.reclaim.stat.delta.<counter>",
        "memcg.reclaim.stat",
        "int",
        "rise of `memory.stat`'s `pgscan`, `pgsteal`, `pgscan_kswapd`, `pgscan_direct`, `pgsteal_kswapd`, `pgsteal_direct`, pages",
    ),
    doc("observer.memcg.events.mechanism", "memcg.events", "string", "`inotify` or `poll`"),
    doc(
        "observer.memcg.events.delta.<counter>",
        "memcg.events",
        "int",
        "rise of `memory.events`' `low`, `high`, `max`, `oom`, `oom_kill`, `oom_group_kill` (non-zero ones)",
    ),
    doc("observer.memcg.pressure.mechanism", "memcg.pressure", "string", "`trigger` or `poll`"),
    doc("observer.memcg.pressure.some_delta_us", "memcg.pressure", "int", "rise of `memory.pressure` `some` total, µs"),
    doc("observer.memcg.pressure.full_delta_us", "memcg.pressure", "int", "rise of its `full` total, µs"),
    doc("observer.memcg.pressure.some_avg10", "memcg.pressure", "double", "`some avg10` as read"),
    doc("observer.memcg.pressure.full_avg10", "memcg.pressure", "double", "`full avg10` as read"),
    doc("observer.oom.victim.pid", "memcg.oom_kill", "int", "the process the OOM killer chose"),
    doc("observer.oom.victim.comm", "memcg.oom_kill", "string", "its comm"),
    doc("observer.oom.comm_source", "memcg.oom_kill", "string", "where the comm came from: `record`, `task`, `proc`"),
    doc(
        "observer.oom.trigger.pid",
        "memcg.oom_kill",
        "int",
        "the task the OOM killer ran in (the one that hit the limit)",
    ),
    doc("observer.oom.trigger.comm", "memcg.oom_kill", "string", "its comm"),
    doc(
        "observer.oom.total_vm_kb",
        "memcg.oom_kill",
        "int",
        "the victim's total VM, kB (kernels whose tracepoint has it)",
    ),
    doc("observer.oom.anon_rss_kb", "memcg.oom_kill", "int", "the victim's anonymous RSS, kB"),
    // Network
    doc("network.transport", TCP_SPANS, "string", "`tcp`"),
    doc("network.type", "tcp.reset, tcp.retransmit, net.drop", "string", "`ipv4` or `ipv6`"),
    doc("network.local.address", TCP_SPANS, "string", "the local side (for a sent reset: the side that sent it)"),
    doc("network.local.port", TCP_SPANS, "int", "its port"),
    doc("network.peer.address", TCP_SPANS, "string", "the remote side"),
    doc("network.peer.port", TCP_SPANS, "int", "its port"),
    doc("observer.tcp.direction", "tcp.reset", "string", "`sent` or `received`"),
    doc("observer.tcp.state", TCP_SPANS, "string", "the socket's state (`TCP_ESTABLISHED`, …)"),
    doc("observer.tcp.reason", "tcp.reset", "string", "the kernel's reset reason (`NO_SOCKET`, …), where it gives one"),
    doc("observer.netns", "tcp.reset, tcp.retransmit, net.drop, net.drop.summary", "int", "network namespace inode"),
    doc("observer.tcp.retransmit.segs", "tcp.retransmit", "int", "segments retransmitted"),
    doc(
        "observer.tcp.retransmit.err",
        "tcp.retransmit",
        "int",
        "the attempt's error (0: sent), on kernels that give it",
    ),
    doc(
        "observer.net.drop.reason",
        "net.drop, net.drop.summary",
        "string",
        "the kernel's drop reason (`NO_SOCKET`, …)",
    ),
    doc("observer.net.drop.location", "net.drop", "string", "where the packet was freed (`function+0xoff`)"),
    doc("observer.net.drop.flags_class", "net.drop, net.drop.summary", "string", "`rst`, `syn`, `tcp` or `non_tcp`"),
    doc("observer.net.drop.src_address", "net.drop", "string", "the packet's source address"),
    doc("observer.net.drop.src_port", "net.drop", "int", "its source port"),
    doc("observer.net.drop.dst_address", "net.drop", "string", "its destination address"),
    doc("observer.net.drop.dst_port", "net.drop", "int", "its destination port"),
    doc("observer.net.drop.summary.count", "net.drop.summary", "int", "drops since the previous summary"),
    // Folded aggregates
    doc(
        "observer.folded.kind",
        "<kind>.folded",
        "string",
        "the record kind past the per-kind budget (the span runs from the first to the last of them)",
    ),
    doc("observer.folded.count", "<kind>.folded", "int", "how many were folded"),
    doc("observer.folded.sum", "<kind>.folded", "int", "sum of their values (`unit`)"),
    doc("observer.folded.min", "<kind>.folded", "int", "smallest value"),
    doc("observer.folded.max", "<kind>.folded", "int", "largest value"),
    doc("observer.folded.unit", "<kind>.folded", "string", "`ns` for intervals, else `1` (one per record)"),
];

/// The record kind: a child span's name (as in `events.jsonl`'s `kind`).
pub fn record_kind(event: &Event) -> &'static str {
    match event {
        Event::TcpReset(_) => "tcp.reset",
        Event::GoGc(_) => "go.gc",
        Event::GoAssist(_) => "go.assist",
        Event::GoHeapGrow(_) => "go.heap_grow",
        Event::GoScavenge(_) => "go.scavenge",
        Event::GoScavengeSummary(_) => "go.scavenge.summary",
        Event::GoAttach(_) => "go.attach",
        Event::NetDrop(_) => "net.drop",
        Event::NetDropSummary(_) => "net.drop.summary",
        Event::TcpRetransmit(_) => "tcp.retransmit",
        Event::MemcgEvents(_) => "memcg.events",
        Event::MemcgOomKill(_) => "memcg.oom_kill",
        Event::MemcgThrottle(_) => "memcg.throttle",
        Event::MemcgThrottleIdle(_) => "memcg.throttle.idle",
        Event::MemcgReclaim(_) => "memcg.reclaim",
        Event::MemcgReclaimStat(_) => "memcg.reclaim.stat",
        Event::MemcgPressure(_) => "memcg.pressure",
    }
}

/// A key-value list with the few shapes the mapping needs.
#[derive(Default)]
struct Attrs(Vec<KeyValue>);

impl Attrs {
    fn str(&mut self, key: impl Into<opentelemetry::Key>, value: impl Into<String>) {
        self.0.push(KeyValue::new(key, Value::String(value.into().into())));
    }
    fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(key, v);
        }
    }
    fn int(&mut self, key: impl Into<opentelemetry::Key>, value: i64) {
        self.0.push(KeyValue::new(key, value));
    }
    /// OTLP ints are i64: a u64 past i64::MAX saturates (never happens for
    /// byte counts of a real machine, but it must not wrap negative).
    fn uint(&mut self, key: impl Into<opentelemetry::Key>, value: u64) {
        self.int(key, i64::try_from(value).unwrap_or(i64::MAX));
    }
    fn opt_uint(&mut self, key: &'static str, value: Option<u64>) {
        if let Some(v) = value {
            self.uint(key, v);
        }
    }
    fn opt_int(&mut self, key: &'static str, value: Option<i64>) {
        if let Some(v) = value {
            self.int(key, v);
        }
    }
    fn bool(&mut self, key: &'static str, value: bool) {
        self.0.push(KeyValue::new(key, value));
    }
    fn double(&mut self, key: &'static str, value: f64) {
        self.0.push(KeyValue::new(key, value));
    }
}

fn runtime_name(runtime: Runtime) -> Option<&'static str> {
    match runtime {
        Runtime::Containerd => Some("containerd"),
        Runtime::CriO => Some("cri-o"),
        Runtime::Docker => Some("docker"),
        Runtime::Unknown => None,
    }
}

fn qos_name(qos: Qos) -> &'static str {
    match qos {
        Qos::Guaranteed => "guaranteed",
        Qos::Burstable => "burstable",
        Qos::BestEffort => "besteffort",
    }
}

/// The workload's own resource attributes (`resource::workload_resource`
/// puts the node's under them).
pub fn workload_attributes(identity: &Identity) -> Vec<KeyValue> {
    let mut a = Attrs::default();
    let service = if identity.service_name.is_empty() { UNKNOWN_SERVICE } else { identity.service_name.as_str() };
    a.str(SERVICE_NAME, service);
    a.opt_str("container.id", identity.container_id.as_deref());
    a.opt_str("container.runtime.name", identity.container_runtime.and_then(runtime_name));
    a.opt_str("k8s.pod.uid", identity.k8s_pod_uid.as_deref());
    if let Some(k8s) = &identity.k8s {
        a.opt_str("k8s.pod.name", k8s.pod_name.as_deref());
        a.opt_str("k8s.namespace.name", k8s.namespace.as_deref());
        a.opt_str("k8s.container.name", k8s.container_name.as_deref());
        a.opt_str("k8s.node.name", k8s.node_name.as_deref());
        for owner in &k8s.owners {
            a.str(format!("k8s.{}.name", owner.kind), owner.name.clone());
        }
    }
    // Process attributes only when the workload is one process: on a
    // container's resource they would claim every process is that one.
    if let Some(pid) = identity.pid {
        a.int("process.pid", pid.into());
        a.opt_str("process.executable.name", identity.executable_name.as_deref());
        if let Some(version) = &identity.go_version {
            a.str("process.runtime.name", "go");
            a.str("process.runtime.version", version.clone());
        }
    }
    a.0
}

/// The root span's attributes.
pub fn root_attributes(episode: &Episode) -> Vec<KeyValue> {
    let mut a = Attrs::default();
    let w = &episode.workload;
    a.str("observer.episode.kind", episode.kind.name());
    a.str("observer.episode.close_reason", episode.closed_by.name());
    a.opt_str("observer.cgroup.path", w.cgroup_path.as_deref());
    a.opt_uint("observer.cgroup.id", w.cgroup_id);
    a.opt_uint("observer.netns", w.netns.map(u64::from));
    a.opt_str("observer.k8s.pod.qos", w.k8s_pod_qos.map(qos_name));
    let open = episode.limits_at_open.unwrap_or_default();
    let close = episode.limits_at_close.unwrap_or_default();
    a.opt_uint("observer.memory.high.open", open.memory_high);
    a.opt_uint("observer.memory.max.open", open.memory_max);
    a.opt_uint("observer.memory.high.close", close.memory_high);
    a.opt_uint("observer.memory.max.close", close.memory_max);
    for (signal, count) in &episode.counts {
        a.uint(format!("observer.count.{}", signal.name()), *count);
    }
    if let Some(env) = &w.go_env {
        go_env(&mut a, env);
    }
    for p in &episode.profiles {
        a.str(format!("observer.profile.{}.file", p.kind), p.file.clone());
        a.str(format!("observer.profile.{}.id", p.kind), hex(&p.id));
        a.uint(format!("observer.profile.{}.samples", p.kind), p.samples);
    }
    a.0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a Go process was started with (`GOGC`, `GOMEMLIMIT`, `GODEBUG`).
fn go_env(a: &mut Attrs, env: &GoEnv) {
    let read = match env.environ {
        EnvironRead::Read => "read",
        EnvironRead::Truncated => "truncated",
        EnvironRead::Unreadable => "unreadable",
    };
    a.str("observer.go.env.environ", read);
    a.opt_str("observer.go.env.gogc", env.env_gogc.as_deref());
    a.opt_str("observer.go.env.gomemlimit", env.env_gomemlimit.as_deref());
    a.opt_str("observer.go.env.godebug", env.env_godebug.as_deref());
}

/// A folded aggregate's attributes.
pub fn folded_attributes(folded: &Folded) -> Vec<KeyValue> {
    let mut a = Attrs::default();
    a.str("observer.folded.kind", folded.kind);
    a.uint("observer.folded.count", folded.count);
    a.uint("observer.folded.sum", folded.sum);
    a.uint("observer.folded.min", folded.min);
    a.uint("observer.folded.max", folded.max);
    a.str("observer.folded.unit", folded.unit);
    a.0
}

fn who(a: &mut Attrs, who: &Attribution) {
    a.opt_int("process.pid", who.pid.map(i64::from));
    a.opt_str("observer.comm", who.comm.as_deref());
    if let Some(source) = cgroup_source(who) {
        a.str("observer.cgroup.source", source);
    }
}

fn cgroup_source(who: &Attribution) -> Option<&'static str> {
    use crate::event::CgroupSource::*;
    match who.cgroup_source {
        Socket => Some("socket"),
        Process => Some("process"),
        Cgroup => Some("cgroup"),
        Proc => Some("proc"),
        None => Option::None,
    }
}

fn limits(a: &mut Attrs, limits: &MemcgLimits) {
    a.opt_uint("observer.memory.current", limits.memory_current);
    a.opt_uint("observer.memory.high", limits.memory_high);
    a.opt_uint("observer.memory.max", limits.memory_max);
}

fn network_type(family: &str) -> Option<&'static str> {
    match family {
        "ipv4" => Some("ipv4"),
        "ipv6" => Some("ipv6"),
        _ => None,
    }
}

fn four_tuple(a: &mut Attrs, family: &str, local: (std::net::IpAddr, u16), peer: (std::net::IpAddr, u16)) {
    a.str("network.transport", "tcp");
    a.opt_str("network.type", network_type(family));
    a.str("network.local.address", local.0.to_string());
    a.int("network.local.port", local.1.into());
    a.str("network.peer.address", peer.0.to_string());
    a.int("network.peer.port", peer.1.into());
}

fn memory_events(a: &mut Attrs, delta: &MemoryEventCounts) {
    let counters = [
        ("low", delta.low),
        ("high", delta.high),
        ("max", delta.max),
        ("oom", delta.oom),
        ("oom_kill", delta.oom_kill),
        ("oom_group_kill", delta.oom_group_kill.unwrap_or(0)),
    ];
    for (name, value) in counters.into_iter().filter(|(_, v)| *v > 0) {
        a.uint(format!("observer.memcg.events.delta.{name}"), value);
    }
}

fn reclaim_stat(a: &mut Attrs, delta: &ReclaimStatCounts) {
    let counters = [
        ("pgscan", delta.pgscan),
        ("pgsteal", delta.pgsteal),
        ("pgscan_kswapd", delta.pgscan_kswapd),
        ("pgscan_direct", delta.pgscan_direct),
        ("pgsteal_kswapd", delta.pgsteal_kswapd),
        ("pgsteal_direct", delta.pgsteal_direct),
    ];
    for (name, value) in counters {
        a.uint(format!("observer.memcg.reclaim.stat.delta.{name}"), value);
    }
}

/// A child span's attributes: the record's fields.
pub fn record_attributes(record: &Record) -> Vec<KeyValue> {
    let mut a = Attrs::default();
    match &record.event {
        Event::TcpReset(r) => {
            four_tuple(&mut a, r.family, (r.local_addr, r.local_port), (r.remote_addr, r.remote_port));
            a.str(
                "observer.tcp.direction",
                match r.direction {
                    Direction::Sent => "sent",
                    Direction::Received => "received",
                },
            );
            a.opt_str("observer.tcp.state", r.state);
            a.opt_str("observer.tcp.reason", r.reason.as_deref());
            a.uint("observer.netns", r.netns.into());
            who(&mut a, &r.who);
        }
        Event::TcpRetransmit(r) => {
            four_tuple(&mut a, r.family, (r.local_addr, r.local_port), (r.remote_addr, r.remote_port));
            a.opt_str("observer.tcp.state", r.state);
            a.uint("observer.tcp.retransmit.segs", r.segs.into());
            a.opt_int("observer.tcp.retransmit.err", r.err.map(i64::from));
            a.uint("observer.netns", r.netns.into());
            who(&mut a, &r.who);
        }
        Event::NetDrop(d) => {
            a.str("observer.net.drop.reason", d.reason.clone());
            a.opt_str("observer.net.drop.location", d.location.as_deref());
            a.str("observer.net.drop.flags_class", d.flags_class);
            a.opt_str("network.type", network_type(d.family));
            a.opt_str("observer.net.drop.src_address", d.src_addr.map(|ip| ip.to_string()).as_deref());
            a.opt_int("observer.net.drop.src_port", d.src_port.map(i64::from));
            a.opt_str("observer.net.drop.dst_address", d.dst_addr.map(|ip| ip.to_string()).as_deref());
            a.opt_int("observer.net.drop.dst_port", d.dst_port.map(i64::from));
            a.uint("observer.netns", d.netns.into());
            who(&mut a, &d.who);
        }
        Event::NetDropSummary(s) => {
            a.str("observer.net.drop.reason", s.reason.clone());
            a.str("observer.net.drop.flags_class", s.flags_class);
            a.uint("observer.net.drop.summary.count", s.count);
            a.uint("observer.netns", s.netns.into());
        }
        Event::GoGc(gc) => {
            a.opt_uint("observer.go.gc.cycle", gc.cycle.map(u64::from));
            a.opt_uint("observer.go.gc.cycles_unseen", gc.cycles_unseen.map(u64::from));
            a.opt_uint("observer.go.gc.sweep_termination_ns", gc.sweep_termination_ns);
            a.opt_uint("observer.go.gc.mark_ns", gc.mark_ns);
            a.opt_uint("observer.go.gc.mark_termination_ns", gc.mark_termination_ns);
            a.opt_uint("observer.go.gc.heap_start_bytes", gc.heap_start_bytes);
            a.opt_uint("observer.go.gc.heap_end_bytes", gc.heap_end_bytes);
            a.opt_uint("observer.go.gc.heap_marked_bytes", gc.heap_marked_bytes);
            a.opt_uint("observer.go.gc.heap_goal_bytes", gc.heap_goal_bytes);
            a.opt_int("observer.go.gc.gogc", gc.gogc.map(i64::from));
            a.opt_int("observer.go.gc.memory_limit_bytes", gc.memory_limit_bytes);
            who(&mut a, &gc.owner.who);
        }
        Event::GoAssist(assist) => {
            a.opt_uint("observer.go.assist.duration_ns", assist.duration_ns);
            a.str("observer.go.assist.goroutine", assist.goroutine.clone());
            a.int("thread.id", assist.tid.into());
            who(&mut a, &assist.owner.who);
        }
        Event::GoHeapGrow(h) => {
            a.uint("observer.go.heap_grow.bytes", h.bytes);
            a.int("thread.id", h.tid.into());
            who(&mut a, &h.owner.who);
        }
        Event::GoScavenge(h) => {
            a.uint("observer.go.scavenge.bytes", h.bytes);
            a.int("thread.id", h.tid.into());
            who(&mut a, &h.owner.who);
        }
        Event::GoScavengeSummary(s) => {
            a.uint("observer.go.scavenge.summary.calls", s.calls);
            a.uint("observer.go.scavenge.summary.bytes", s.bytes);
            who(&mut a, &s.owner.who);
        }
        Event::GoAttach(attach) => {
            go_env(&mut a, &attach.env);
            who(&mut a, &attach.owner.who);
        }
        Event::MemcgEvents(e) => {
            a.str("observer.memcg.events.mechanism", e.mechanism);
            memory_events(&mut a, &e.delta);
            limits(&mut a, &e.limits);
            who(&mut a, &e.who);
        }
        Event::MemcgOomKill(k) => {
            // The record's pid and comm are the victim's, not a process the
            // event "happened in": named as such, never `process.pid`.
            a.opt_int("observer.oom.victim.pid", k.who.pid.map(i64::from));
            a.opt_str("observer.oom.victim.comm", k.who.comm.as_deref());
            a.opt_str("observer.oom.comm_source", k.comm_source);
            a.int("observer.oom.trigger.pid", k.trigger_pid.into());
            a.str("observer.oom.trigger.comm", k.trigger_comm.clone());
            a.opt_uint("observer.oom.total_vm_kb", k.total_vm_kb);
            a.opt_uint("observer.oom.anon_rss_kb", k.anon_rss_kb);
            if let Some(source) = cgroup_source(&k.who) {
                a.str("observer.cgroup.source", source);
            }
        }
        Event::MemcgThrottle(t) => {
            a.str("observer.memcg.throttle.mechanism", t.mechanism);
            a.bool("observer.memcg.throttle.inferred", t.inferred);
            a.opt_uint("observer.memcg.throttle.duration_ns", t.duration_ns);
            a.opt_uint("observer.memcg.throttle.nr_pages", t.nr_pages);
            limits(&mut a, &t.limits);
            who(&mut a, &t.who);
        }
        Event::MemcgThrottleIdle(t) => {
            a.str("observer.memcg.throttle.idle.mechanism", t.mechanism);
            a.uint("observer.memcg.throttle.idle.count", t.count);
            a.uint("observer.memcg.throttle.idle.total", t.total);
            who(&mut a, &t.who);
        }
        Event::MemcgReclaim(r) => {
            a.opt_uint("observer.memcg.reclaim.duration_ns", r.duration_ns);
            a.uint("observer.memcg.reclaim.nr_reclaimed", r.nr_reclaimed);
            limits(&mut a, &r.limits);
            who(&mut a, &r.who);
        }
        Event::MemcgReclaimStat(s) => {
            reclaim_stat(&mut a, &s.delta);
            limits(&mut a, &s.limits);
            who(&mut a, &s.who);
        }
        Event::MemcgPressure(p) => {
            a.str("observer.memcg.pressure.mechanism", p.mechanism);
            a.uint("observer.memcg.pressure.some_delta_us", p.some_delta_us);
            a.uint("observer.memcg.pressure.full_delta_us", p.full_delta_us);
            a.double("observer.memcg.pressure.some_avg10", p.some_avg10);
            a.double("observer.memcg.pressure.full_avg10", p.full_avg10);
            limits(&mut a, &p.limits);
            who(&mut a, &p.who);
        }
    }
    a.0
}

#[cfg(test)]
/// The README's table, as Markdown.
pub fn markdown_table() -> String {
    let mut out = String::from("| attribute | on | type | meaning |\n|---|---|---|---|\n");
    for row in TABLE {
        out.push_str(&format!("| `{}` | {} | {} | {} |\n", row.name, row.on, row.ty, row.meaning));
    }
    out
}

#[cfg(test)]
/// Whether `name` is a row of `TABLE` (a `<…>` part matches any suffix).
pub fn documented(name: &str) -> bool {
    TABLE.iter().any(|row| match row.name.split_once('<') {
        Some((prefix, _)) if !prefix.is_empty() => name.starts_with(prefix),
        _ => row.name == name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::testdata;

    #[test]
    fn every_emitted_attribute_is_in_the_table() {
        let episode = testdata::episode_with_every_child();
        let mut names: Vec<String> = root_attributes(&episode).iter().map(|kv| kv.key.to_string()).collect();
        names.extend(workload_attributes(&testdata::identity()).iter().map(|kv| kv.key.to_string()));
        for child in &episode.children {
            names.extend(record_attributes(&child.record).iter().map(|kv| kv.key.to_string()));
        }
        for folded in &episode.folded {
            names.extend(folded_attributes(folded).iter().map(|kv| kv.key.to_string()));
        }
        for record in testdata::one_record_of_every_kind() {
            names.extend(record_attributes(&record).iter().map(|kv| kv.key.to_string()));
        }
        let missing: Vec<&String> = names.iter().filter(|n| !documented(n)).collect();
        assert!(missing.is_empty(), "not in TABLE: {missing:?}");
        // No duplicate names per span.
        for record in testdata::one_record_of_every_kind() {
            let attrs = record_attributes(&record);
            let mut keys: Vec<_> = attrs.iter().map(|kv| kv.key.as_str().to_string()).collect();
            keys.sort();
            let n = keys.len();
            keys.dedup();
            assert_eq!(n, keys.len(), "{}", record_kind(&record.event));
        }
    }

    #[test]
    fn every_table_row_is_emitted() {
        let mut names: Vec<String> = Vec::new();
        let mut episode = testdata::episode_with_every_child();
        episode.limits_at_open = episode.limits_at_close;
        names.extend(root_attributes(&episode).iter().map(|kv| kv.key.to_string()));
        let node = crate::export::otlp::config::NodeResource { attributes: vec![], host_name: Some("h".into()) };
        let resource = crate::export::otlp::resource::workload_resource(&testdata::pod_identity(), &node);
        names.extend(resource.iter().map(|(k, _)| k.to_string()));
        for record in testdata::one_record_of_every_kind() {
            names.extend(record_attributes(&record).iter().map(|kv| kv.key.to_string()));
        }
        names.extend(episode.folded.iter().flat_map(folded_attributes).map(|kv| kv.key.to_string()));
        // Rows that are not attributes, or need data the fixtures lack.
        let special = ["(link)", "(status)", "<OTEL_RESOURCE_ATTRIBUTES key>", "k8s.cluster.name"];
        for row in TABLE.iter().filter(|r| !special.contains(&r.name)) {
            let hit = match row.name.split_once('<') {
                Some((prefix, _)) => names.iter().any(|n| n.starts_with(prefix)),
                None => names.iter().any(|n| n == row.name),
            };
            assert!(hit, "TABLE row never emitted: {}", row.name);
        }
    }

    #[test]
    fn a_pods_metadata_is_on_the_resource() {
        let attrs = workload_attributes(&testdata::pod_identity());
        let get = |k: &str| attrs.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.to_string());
        assert_eq!(get("k8s.pod.name").as_deref(), Some("checkout-7d4b9c8f6-x2x4z"));
        assert_eq!(get("k8s.namespace.name").as_deref(), Some("shop"));
        assert_eq!(get("k8s.container.name").as_deref(), Some("server"));
        assert_eq!(get("k8s.node.name").as_deref(), Some("node-a"));
        assert_eq!(get("k8s.deployment.name").as_deref(), Some("checkout"));
        assert_eq!(get("k8s.replicaset.name").as_deref(), Some("checkout-7d4b9c8f6"));
        assert!(
            workload_attributes(&testdata::identity())
                .iter()
                .all(|kv| !kv.key.as_str().ends_with(".name") || !kv.key.as_str().starts_with("k8s."))
        );
    }

    #[test]
    fn tcp_reset_uses_semantic_conventions() {
        let record = testdata::one_record_of_every_kind().into_iter().find(|r| record_kind(&r.event) == "tcp.reset");
        let attrs = record_attributes(&record.unwrap());
        let get = |k: &str| attrs.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.clone());
        assert_eq!(get("network.transport"), Some("tcp".into()));
        assert_eq!(get("network.type"), Some("ipv4".into()));
        assert_eq!(get("network.local.address"), Some("10.0.0.7".into()));
        assert_eq!(get("network.local.port"), Some(Value::I64(8080)));
        assert_eq!(get("network.peer.address"), Some("10.0.0.9".into()));
        assert_eq!(get("network.peer.port"), Some(Value::I64(51234)));
        assert_eq!(get("observer.tcp.direction"), Some("sent".into()));
        assert_eq!(get("observer.tcp.state"), Some("TCP_ESTABLISHED".into()));
        assert_eq!(get("observer.tcp.reason"), Some("NO_SOCKET".into()));
    }

    #[test]
    fn big_unsigned_values_saturate() {
        let mut a = Attrs::default();
        a.uint("x", u64::MAX);
        assert_eq!(a.0[0].value, Value::I64(i64::MAX));
    }

    /// Writes the README part (`cargo test … write_readme_part -- --ignored`).
    #[test]
    #[ignore]
    fn write_readme_part() {
        std::fs::write("/tmp/readme-otlp-table.md", markdown_table()).unwrap();
    }
}
