//! Prepares, loads and attaches every signal source once, at start: each
//! one that this kernel cannot serve is left out, the others carry on (one
//! unknown layout, type or function costs one signal, never the run). What
//! comes out is a list of [`Source`]s, the `memory.events` watcher (a source
//! with a thread of its own), the ring buffer, and each signal's verdict.
//! `observer check` runs exactly this, then detaches.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};
use observer_common::{tcp::ResetTracepointLayout, tp_btf::TpBtfArgs};

use crate::{
    config::RunConfig,
    kernel::{btf::Btf, loader, offsets, tracefs},
    sources::{
        Source,
        goruntime::GoRuntimeSource,
        memcg::{self, events::MemcgWatcher, kernel::KernelMemcg, oom::OomSource},
        net::NetSources,
        signals::Signals,
        tcp::ResetSource,
    },
};

pub struct Attached {
    /// Dropping it detaches every program.
    pub ebpf: Ebpf,
    pub sources: Vec<Box<dyn Source>>,
    pub memcg_watch: Option<MemcgWatcher>,
    pub ring: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    /// The memcg part of the ready line.
    pub memcg_text: String,
    pub signals: Signals,
}

/// What the attachment is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Run,
    /// `observer check`: everything is loaded and attached as for a run,
    /// but no running Go process is probed.
    Check,
}

pub fn all(config: &RunConfig, purpose: Purpose) -> Result<Attached> {
    let tracefs = tracefs::ensure_mounted()?;
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => Some(btf),
        Err(err) => {
            tracing::warn!("{err}; socket cgroups, network namespaces and reset reasons will be missing");
            None
        }
    };
    let (kernel_offsets, missing) =
        btf.as_ref().map(offsets::resolve).unwrap_or((observer_common::kernel::KernelOffsets::UNKNOWN, Vec::new()));
    for m in &missing {
        tracing::warn!("{m}; the attribution that needs it is skipped");
    }
    let (exec_offsets, missing) =
        btf.as_ref().map(offsets::resolve_exec).unwrap_or((observer_common::process::ExecOffsets::UNKNOWN, Vec::new()));
    for m in &missing {
        tracing::warn!("{m}; new processes of probed Go binaries are watched once the agent gets to them");
    }
    let mut signals = Signals::default();
    let resets = ResetSource::prepare(&tracefs, btf.as_ref());
    let mut net = NetSources::prepare(&tracefs, btf.as_ref(), config.drop_events_per_sec);
    let layouts = resets.as_ref().map_or((ResetTracepointLayout::UNKNOWN, ResetTracepointLayout::UNKNOWN), |r| {
        (r.sent.layout(), r.received.layout())
    });
    let reset_args = resets.as_ref().map_or((TpBtfArgs::ABSENT, TpBtfArgs::ABSENT), ResetSource::btf_args);
    let net_args = net.btf_args();
    let cookies = attach_cookies(btf.as_ref());
    let mut ebpf = loader::load(&loader::Globals {
        offsets: kernel_offsets,
        send_reset: layouts.0,
        receive_reset: layouts.1,
        net_offsets: NetSources::offsets(btf.as_ref()),
        drop: net.drop_config(),
        retransmit: net.retransmit_config(),
        send_reset_args: reset_args.0,
        receive_reset_args: reset_args.1,
        drop_args: net_args.0,
        retransmit_args: net_args.1,
        memcg: memcg::kernel::config(btf.as_ref(), &tracefs),
        attach_cookies: cookies,
        exec_offsets,
    })
    .context("loading the eBPF programs")?;
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    // aya's own parse of the kernel's BTF, which the `tp_btf` programs load against.
    let kernel_btf = aya::Btf::from_sys_fs()
        .inspect_err(|e| tracing::warn!("kernel BTF: {e}; classic tracepoints only (skipped runs go uncounted)"))
        .ok();
    match resets.and_then(|mut r| r.attach(&mut ebpf, kernel_btf.as_ref()).map(|()| r)) {
        Ok(r) => {
            signals.set("tcp.reset.sent", Ok(r.mechanisms.0.clone()));
            signals.set("tcp.reset.received", Ok(r.mechanisms.1.clone()));
            sources.push(Box::new(r));
        }
        Err(err) => {
            signals.set("tcp.reset.sent", Err(err.to_string()));
            signals.set("tcp.reset.received", Err(err.to_string()));
        }
    }
    net.attach(&mut ebpf, kernel_btf.as_ref());
    net.verdicts(&mut signals);
    sources.push(Box::new(net));
    // Linux lets only CAP_SYS_ADMIN create uprobes (kernel/privileges.rs).
    let go = match crate::kernel::privileges::uprobes_allowed() {
        Ok(()) => {
            GoRuntimeSource::new(&mut ebpf, &tracefs, config.go_processes.clone(), cookies, config.alloc_profiles)
                .map_err(|e| e.to_string())
        }
        Err(why) => Err(why),
    };
    match go {
        Ok(mut go) => {
            if purpose == Purpose::Run {
                go.attach_changes(&mut ebpf);
            }
            go_verdicts(&mut signals, Ok(&go));
            sources.push(Box::new(go));
        }
        Err(err) => go_verdicts(&mut signals, Err(err)),
    }
    let oom = OomSource::prepare(&tracefs).and_then(|o| o.attach(&mut ebpf).map(|()| o));
    let (memcg_kernel, memcg_watch, memcg_text) = memcg_sources(&mut ebpf, config, &mut signals);
    signals.set(
        "memcg.oom_kill",
        match (&oom, &memcg_watch) {
            (Ok(_), _) => Ok("tracepoint oom:mark_victim".into()),
            (Err(e), Some(_)) => {
                Ok(format!("memory.events oom_kill counts, without the victims (oom:mark_victim: {e})"))
            }
            (Err(e), None) => Err(format!("oom:mark_victim: {e}; and no memory.events to count kills in")),
        },
    );
    if let Ok(o) = oom {
        sources.push(Box::new(o));
    }
    if let Some(k) = memcg_kernel {
        sources.push(Box::new(k));
    }
    for s in signals.unavailable() {
        tracing::warn!("{} unavailable: {}", s.signal, s.detail);
    }
    if signals.active() == 0 {
        anyhow::bail!("no signal can be observed on this kernel (see `observer check`)");
    }
    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS missing")?)?;
    let counters = PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)?;
    Ok(Attached { ebpf, sources, memcg_watch, ring, counters, memcg_text, signals })
}

/// Whether the kernel's BPF helpers include `bpf_get_attach_cookie` (5.15+),
/// by its `enum bpf_func_id` in BTF; without BTF, assumed not.
pub fn attach_cookies(btf: Option<&Btf>) -> bool {
    btf.and_then(|b| b.enum_values("bpf_func_id").ok())
        .is_some_and(|values| values.iter().any(|(name, _)| name == "BPF_FUNC_get_attach_cookie"))
}

/// The Go signals stand or fall together: their uprobe programs loaded
/// (they attach to each Go process as it is found).
fn go_verdicts(signals: &mut Signals, go: Result<&GoRuntimeSource, String>) {
    let (discovery, why) = match go {
        Ok(go) => (Ok(go.discovery_text()), None),
        Err(why) => (Err(why.clone()), Some(why)),
    };
    signals.set("go.processes", discovery);
    for (signal, probes) in [
        ("go.gc", "runtime.freeStackSpans (once per cycle, at its end)"),
        ("go.assist", "runtime.gcAssistAlloc entry and returns, runtime.gcAssistAlloc1"),
        ("go.heap", "runtime.(*pageAlloc).grow, runtime.sysUnusedOS"),
    ] {
        signals.set(signal, why.clone().map_or_else(|| Ok(format!("uprobes on {probes}")), Err));
    }
}

/// The throttle and reclaim programs, and the `memory.events` watcher.
fn memcg_sources(
    ebpf: &mut Ebpf,
    config: &RunConfig,
    signals: &mut Signals,
) -> (Option<KernelMemcg>, Option<MemcgWatcher>, String) {
    let memcg_root = memcg::memory_root();
    // PSI can be compiled out or off (`psi=0`): then there is nothing to read.
    let psi = match std::fs::read_to_string("/proc/pressure/memory") {
        Ok(_) => Ok(config.memcg_pressure),
        Err(e) => Err(format!("/proc/pressure/memory: {e}")),
    };
    let memcg_kernel = match &memcg_root {
        Ok(root) => Some(KernelMemcg::attach(ebpf, root.clone(), config.memcg_throttle, config.memcg_reclaim)),
        Err(err) => {
            signals.set("memcg.throttle", Err(err.to_string()));
            signals.set("memcg.reclaim", Err(err.to_string()));
            None
        }
    };
    // The `stat` reclaim mechanism is read by the memory.events watcher.
    let reclaim_stat = memcg_kernel.as_ref().is_some_and(|k| k.reclaim_via == Ok(memcg::Reclaim::Stat));
    let memcg_watch = match memcg_root
        .map_err(memcg::events::MemcgError::Unavailable)
        .and_then(|root| MemcgWatcher::start(root, config.memcg_mechanism, psi.clone().ok(), reclaim_stat))
    {
        Ok(w) => {
            let via = format!("memory.events change notifications ({})", w.mechanism().name());
            signals.set("memcg.high", Ok(via.clone()));
            signals.set("memcg.max", Ok(via));
            let pressure = psi.map(|p| match p {
                memcg::Pressure::Trigger => "memory.pressure (PSI) triggers, polled where a trigger fails".to_string(),
                memcg::Pressure::Poll => "memory.pressure (PSI) polled".to_string(),
            });
            signals.set("memcg.pressure", pressure);
            Some(w)
        }
        Err(err) => {
            for signal in ["memcg.high", "memcg.max", "memcg.pressure"] {
                signals.set(signal, Err(err.to_string()));
            }
            None
        }
    };
    if let Some(k) = &memcg_kernel {
        signals.set(
            "memcg.throttle",
            k.throttle.clone().map(|t| match t {
                memcg::Throttle::Fentry => "fentry mem_cgroup_handle_over_high (+ fexit)".to_string(),
                memcg::Throttle::Kprobe => "kprobe mem_cgroup_handle_over_high (+ kretprobe)".to_string(),
                _ => {
                    "tracepoint vmscan:mm_vmscan_memcg_reclaim_begin/_end in the task's context (inferred)".to_string()
                }
            }),
        );
        let reclaim = match (&k.reclaim_via, &k.reclaim) {
            (Err(err), _) => Err(err.clone()),
            (Ok(memcg::Reclaim::Stat), _) if memcg_watch.is_none() => {
                Err("memory.stat deltas are read by the memory.events watcher, which did not start".into())
            }
            (Ok(memcg::Reclaim::Stat), Err(err)) => {
                Ok(format!("memory.stat pgscan/pgsteal deltas (vmscan tracepoints: {err})"))
            }
            (Ok(memcg::Reclaim::Stat), Ok(())) => Ok("memory.stat pgscan/pgsteal deltas (forced)".into()),
            (Ok(_), _) => Ok("tracepoint vmscan:mm_vmscan_memcg_reclaim_begin/_end".into()),
        };
        signals.set("memcg.reclaim", reclaim);
    }
    let memcg_text = match (&memcg_watch, &memcg_kernel) {
        (Some(w), Some(k)) => format!(
            "memcg: memory.events via {}; pressure: {}; {}",
            w.mechanism().name(),
            w.pressure().map_or("unavailable (no PSI)", memcg::Pressure::name),
            k.describe()
        ),
        _ => "memcg: unavailable".to_string(),
    };
    (memcg_kernel, memcg_watch, memcg_text)
}
