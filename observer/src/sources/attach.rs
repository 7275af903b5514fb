//! Prepares, loads and attaches every signal source once, at start: each
//! one that this kernel cannot serve is left out with a warning, the others
//! carry on. What comes out is a list of [`Source`]s, the `memory.events`
//! watcher (a source with a thread of its own) and the ring buffer.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};

use crate::{
    config::RunConfig,
    kernel::{btf::Btf, loader, offsets, tracefs},
    sources::{
        Source,
        goruntime::GoRuntimeSource,
        memcg::{self, events::MemcgWatcher, kernel::KernelMemcg, oom::OomSource},
        net::NetSources,
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
}

pub fn all(config: &RunConfig) -> Result<Attached> {
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
    let mut resets = ResetSource::prepare(&tracefs, btf.as_ref())?;
    let mut net = NetSources::prepare(&tracefs, btf.as_ref(), config.drop_events_per_sec);
    let mut ebpf = loader::load(&loader::Globals {
        offsets: kernel_offsets,
        send_reset: resets.sent.layout(),
        receive_reset: resets.received.layout(),
        net_offsets: NetSources::offsets(btf.as_ref()),
        drop: net.drop_config(),
        retransmit: net.retransmit_config(),
        memcg: memcg::kernel::config(btf.as_ref(), &tracefs),
    })
    .context("loading the eBPF programs")?;
    resets.attach(&mut ebpf)?;
    net.attach(&mut ebpf);
    let mut sources: Vec<Box<dyn Source>> = vec![Box::new(resets), Box::new(net)];
    // Go processes are one signal among several: without it, carry on.
    match GoRuntimeSource::new(&mut ebpf, &tracefs, config.go_processes.clone()) {
        Ok(mut go) => {
            go.attach_changes(&mut ebpf);
            sources.push(Box::new(go));
        }
        Err(err) => tracing::warn!("{err}; Go GC cycles are not traced"),
    }
    // memcg signals are optional: a host without them still runs the rest.
    match OomSource::prepare(&tracefs).and_then(|o| o.attach(&mut ebpf).map(|()| o)) {
        Ok(o) => sources.push(Box::new(o)),
        Err(err) => tracing::warn!("memcg.oom_kill unavailable: {err}"),
    }
    let (memcg_kernel, memcg_watch, memcg_text) = memcg_sources(&mut ebpf, config);
    if let Some(k) = memcg_kernel {
        sources.push(Box::new(k));
    }
    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS missing")?)?;
    let counters = PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)?;
    Ok(Attached { ebpf, sources, memcg_watch, ring, counters, memcg_text })
}

/// The throttle and reclaim programs, and the `memory.events` watcher.
fn memcg_sources(ebpf: &mut Ebpf, config: &RunConfig) -> (Option<KernelMemcg>, Option<MemcgWatcher>, String) {
    let memcg_root = memcg::memory_root();
    // PSI can be compiled out or off (`psi=0`): then there is nothing to read.
    let psi = match std::fs::read_to_string("/proc/pressure/memory") {
        Ok(_) => Some(config.memcg_pressure),
        Err(e) => {
            tracing::warn!("memcg.pressure unavailable: /proc/pressure/memory: {e}");
            None
        }
    };
    let memcg_kernel = match &memcg_root {
        Ok(root) => Some(KernelMemcg::attach(ebpf, root.clone(), config.memcg_throttle, config.memcg_reclaim)),
        Err(err) => {
            tracing::warn!("memcg signals memcg.throttle, memcg.reclaim unavailable: {err}");
            None
        }
    };
    // The `stat` reclaim mechanism is read by the memory.events watcher.
    let reclaim_stat = memcg_kernel.as_ref().is_some_and(|k| k.reclaim_via == Ok(memcg::Reclaim::Stat));
    let memcg_watch = match memcg_root
        .map_err(memcg::events::MemcgError::Unavailable)
        .and_then(|root| MemcgWatcher::start(root, config.memcg_mechanism, psi, reclaim_stat))
    {
        Ok(w) => Some(w),
        Err(err) => {
            let reclaim = if reclaim_stat { ", memcg.reclaim (memory.stat)" } else { "" };
            tracing::warn!("memcg signals memcg.high, memcg.max, memcg.pressure{reclaim} unavailable: {err}");
            None
        }
    };
    if let Some(Err(err)) = memcg_kernel.as_ref().map(|k| &k.throttle) {
        tracing::warn!("memcg.throttle unavailable: {err}");
    }
    match memcg_kernel.as_ref().map(|k| (&k.reclaim_via, &k.reclaim)) {
        Some((Err(err), _)) => tracing::warn!("memcg.reclaim unavailable: {err}"),
        Some((Ok(memcg::Reclaim::Stat), Err(err))) if config.memcg_reclaim == memcg::Reclaim::Auto => {
            tracing::warn!("memcg.reclaim: vmscan tracepoints unavailable ({err}); using memory.stat deltas")
        }
        _ => {}
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
