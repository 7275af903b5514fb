//! What the running kernel allows, found by doing it: each program type is
//! loaded and attached for real (the tiny programs of observer-ebpf's `probes`
//! object), never inferred from the kernel version.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf,
    maps::MapType,
    programs::{
        BtfTracePoint, FEntry, KProbe, PerfEvent, RawTracePoint, TracePoint, UProbe,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        uprobe::UProbeScope,
    },
};
use serde::Serialize;

use super::{btf, loader::PROBES_OBJECT, tracefs};
use crate::cgroup::cgroup2_mount;

/// The outcome of one probe: what worked, or why not.
pub type Probe = Result<String, String>;

#[derive(Debug, Serialize)]
pub struct Features {
    pub kernel: String,
    pub btf: Probe,
    pub tracefs: Probe,
    /// Program type / attach kind → outcome, in a fixed order.
    pub programs: Vec<(&'static str, Probe)>,
    pub ring_buffer: Probe,
    pub perf_buffer: Probe,
    pub cgroup: Cgroups,
    pub psi: Probe,
    /// `category:name` → present on this kernel.
    pub tracepoints: Vec<(&'static str, bool)>,
    /// Kernel functions we would probe, and whether kallsyms has them.
    pub functions: Vec<(&'static str, bool)>,
}

#[derive(Debug, Serialize)]
pub struct Cgroups {
    /// `v2`, `hybrid` (v1 controllers beside a v2 mount) or `v1`.
    pub layout: &'static str,
    pub v2_mount: Option<PathBuf>,
    /// Controllers enabled on the v2 hierarchy.
    pub v2_controllers: Vec<String>,
    /// Controllers mounted as cgroup v1 hierarchies.
    pub v1_controllers: Vec<String>,
}

/// Every tracepoint any signal uses.
pub const TRACEPOINTS: &[&str] = &[
    "tcp:tcp_send_reset",
    "tcp:tcp_receive_reset",
    "tcp:tcp_retransmit_skb",
    "skb:kfree_skb",
    "vmscan:mm_vmscan_memcg_reclaim_begin",
    "vmscan:mm_vmscan_memcg_reclaim_end",
    "oom:mark_victim",
    "sched:sched_process_exec",
    "sched:sched_process_exit",
];

/// Kernel functions some signals' preferred or fallback hooks need.
pub const FUNCTIONS: &[&str] =
    &["mem_cgroup_handle_over_high", "tcp_send_active_reset", "tcp_v4_send_reset", "tcp_v6_send_reset"];

/// A function in this binary for the uprobe probe to attach to.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn observer_uprobe_probe_target(x: u64) -> u64 {
    std::hint::black_box(x) + 1
}

pub fn detect() -> Features {
    let tracefs_path = tracefs::ensure_mounted();
    let kernel_btf = aya::Btf::from_sys_fs();
    let btf = match (&kernel_btf, btf::Btf::from_sys_fs()) {
        (Ok(_), Ok(_)) => Ok(btf::VMLINUX.to_string()),
        (Err(e), _) => Err(e.to_string()),
        (_, Err(e)) => Err(e.to_string()),
    };
    let tracepoints: Vec<(&'static str, bool)> = TRACEPOINTS
        .iter()
        .map(|tp| {
            let (cat, name) = tp.split_once(':').unwrap_or(("", tp));
            (*tp, tracefs_path.as_ref().is_ok_and(|t| tracefs::tracepoint_exists(t, cat, name)))
        })
        .collect();
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let functions =
        FUNCTIONS.iter().map(|f| (*f, kallsyms.lines().any(|l| l.split_whitespace().nth(2) == Some(f)))).collect();
    Features {
        kernel: kernel_release(),
        btf,
        tracefs: tracefs_path.as_ref().map(|p| p.display().to_string()).map_err(|e| e.to_string()),
        programs: probe_programs(tracefs_path.is_ok(), kernel_btf.as_ref().ok()),
        ring_buffer: map_supported(MapType::RingBuf),
        perf_buffer: map_supported(MapType::PerfEventArray),
        cgroup: cgroups(),
        psi: std::fs::read_to_string("/proc/pressure/memory")
            .map(|_| "/proc/pressure/memory".to_string())
            .map_err(|e| format!("/proc/pressure/memory: {e}")),
        tracepoints,
        functions,
    }
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| format!("{} {}", u.release().to_string_lossy(), u.machine().to_string_lossy()))
        .unwrap_or_else(|_| "unknown".into())
}

fn map_supported(map_type: MapType) -> Probe {
    match aya::sys::is_map_supported(map_type) {
        Ok(true) => Ok("map created".into()),
        Ok(false) => Err("the kernel rejects this map type".into()),
        Err(e) => Err(chain(&e)),
    }
}

/// An error and its sources on one line (aya nests the errno deep inside).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

fn probe_programs(have_tracefs: bool, btf: Option<&aya::Btf>) -> Vec<(&'static str, Probe)> {
    let mut ebpf = match Ebpf::load(PROBES_OBJECT) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            let why = format!("loading the probe object failed: {}", chain(&e));
            return ["tracepoint", "raw_tp", "tp_btf", "kprobe", "fentry", "uprobe", "perf_event"]
                .into_iter()
                .map(|k| (k, Err(why.clone())))
                .collect();
        }
    };
    let no_btf = || Err::<String, String>("no kernel BTF".into());
    vec![
        ("tracepoint", if have_tracefs { tracepoint(&mut ebpf) } else { Err("tracefs is not mounted".into()) }),
        ("raw_tp", raw_tracepoint(&mut ebpf)),
        ("tp_btf", btf.map_or_else(no_btf, |b| tp_btf(&mut ebpf, b))),
        ("kprobe", kprobe(&mut ebpf)),
        ("fentry", btf.map_or_else(no_btf, |b| fentry(&mut ebpf, b))),
        ("uprobe", uprobe(&mut ebpf)),
        ("perf_event", perf_event(&mut ebpf)),
    ]
}

/// A program of the object, as its concrete type; errors as one line.
pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the probe object"))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| chain(&e))
}

fn tracepoint(ebpf: &mut Ebpf) -> Probe {
    let p: &mut TracePoint = program(ebpf, "probe_tracepoint")?;
    p.load().map_err(|e| chain(&e))?;
    p.attach("sched", "sched_process_exit").map_err(|e| chain(&e))?;
    Ok("attached to sched:sched_process_exit".into())
}

fn raw_tracepoint(ebpf: &mut Ebpf) -> Probe {
    let p: &mut RawTracePoint = program(ebpf, "probe_raw_tracepoint")?;
    p.load().map_err(|e| chain(&e))?;
    p.attach("sched_process_exit").map_err(|e| chain(&e))?;
    Ok("attached to sched_process_exit".into())
}

fn tp_btf(ebpf: &mut Ebpf, btf: &aya::Btf) -> Probe {
    let p: &mut BtfTracePoint = program(ebpf, "probe_tp_btf")?;
    p.load("sched_process_exit", btf).map_err(|e| chain(&e))?;
    p.attach().map_err(|e| chain(&e))?;
    Ok("attached to sched_process_exit".into())
}

fn kprobe(ebpf: &mut Ebpf) -> Probe {
    let p: &mut KProbe = program(ebpf, "probe_kprobe")?;
    p.load().map_err(|e| chain(&e))?;
    p.attach("tcp_send_active_reset", 0).map_err(|e| chain(&e))?;
    Ok("attached to tcp_send_active_reset".into())
}

fn fentry(ebpf: &mut Ebpf, btf: &aya::Btf) -> Probe {
    let p: &mut FEntry = program(ebpf, "probe_fentry")?;
    p.load("tcp_send_active_reset", btf).map_err(|e| chain(&e))?;
    p.attach().map_err(|e| chain(&e))?;
    Ok("attached to tcp_send_active_reset".into())
}

fn uprobe(ebpf: &mut Ebpf) -> Probe {
    let p: &mut UProbe = program(ebpf, "probe_uprobe")?;
    p.load().map_err(|e| chain(&e))?;
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    p.attach("observer_uprobe_probe_target", &exe, UProbeScope::CallingProcess).map_err(|e| chain(&e))?;
    observer_uprobe_probe_target(1);
    Ok("attached to a function of this binary".into())
}

fn perf_event(ebpf: &mut Ebpf) -> Probe {
    let p: &mut PerfEvent = program(ebpf, "probe_perf_event")?;
    p.load().map_err(|e| chain(&e))?;
    p.attach(
        PerfEventConfig::Software(SoftwareEvent::CpuClock),
        PerfEventScope::AllProcessesOneCpu { cpu: 0 },
        SamplePolicy::Frequency(1),
        false,
    )
    .map_err(|e| chain(&e))?;
    Ok("software cpu-clock sampling attached".into())
}

fn cgroups() -> Cgroups {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let v2_mount = cgroup2_mount(&mountinfo);
    let v2_controllers = v2_mount
        .as_deref()
        .and_then(|m| std::fs::read_to_string(Path::new(m).join("cgroup.controllers")).ok())
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let v1_controllers = v1_controllers(&mountinfo);
    let layout = match (v2_mount.is_some(), v1_controllers.is_empty()) {
        (true, true) => "v2",
        (true, false) => "hybrid",
        (false, _) => "v1",
    };
    Cgroups { layout, v2_mount, v2_controllers, v1_controllers }
}

/// Controllers of the cgroup v1 hierarchies in /proc/self/mountinfo.
pub fn v1_controllers(mountinfo: &str) -> Vec<String> {
    const KNOWN: &[&str] = &[
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "blkio",
        "pids",
        "net_cls",
        "net_prio",
        "hugetlb",
        "perf_event",
        "rdma",
        "misc",
    ];
    let mut found: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split_once(" - "))
        .filter(|(_, right)| right.split_whitespace().next() == Some("cgroup"))
        .flat_map(|(_, right)| {
            right.split_whitespace().nth(2).unwrap_or("").split(',').map(String::from).collect::<Vec<_>>()
        })
        .filter(|opt| KNOWN.contains(&opt.as_str()))
        .collect();
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_controllers_come_from_cgroup_mount_options() {
        let mountinfo = "\
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd";
        assert_eq!(v1_controllers(mountinfo), ["cpu", "cpuacct", "memory"]);
    }
}
