//! `observer run`: checks, loads, attaches, then turns ring buffer records into
//! events for the live view and the JSON lines until told to stop.

use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use observer_common::{
    EventHeader, EventKind, counter,
    memcg::{MemcgReclaimEvent, MemcgThrottleEvent, OomVictimEvent},
    process::ProcessEvent,
    tcp::TcpResetEvent,
};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    cgroup::CgroupPaths,
    config::RunConfig,
    event::{Attribution, CgroupSource, Event, Record},
    export::{jsonl::JsonlWriter, live::LiveView},
    kernel::{btf::Btf, loader, offsets, privileges, tracefs},
    sources::abort_on_data::AbortOnData,
    sources::{
        goruntime::GoRuntimeSource,
        memcg::{self, events::MemcgWatcher, kernel::KernelMemcg, oom::OomSource},
        net::NetSources,
        tcp::{self, ResetSource},
    },
};

/// Longest a lone event waits in the ring buffer before the agent reads it.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

pub async fn run(config: RunConfig) -> Result<()> {
    privileges::check()?;
    // Before anything is attached: a bad output directory must cost nothing.
    let mut jsonl = JsonlWriter::create(&config.output_dir)?;
    privileges::raise_memlock();
    let tracefs = tracefs::ensure_mounted()?;
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => Some(btf),
        Err(err) => {
            tracing::warn!("{err}; socket cgroups, network namespaces and reset reasons will be missing");
            None
        }
    };
    let (kernel_offsets, missing) = btf.as_ref().map(offsets::resolve).unwrap_or_default_offsets();
    for m in &missing {
        tracing::warn!("{m}; the attribution that needs it is skipped");
    }
    let resets = ResetSource::prepare(&tracefs, btf.as_ref())?;
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
    let reset_mechanism = resets.attach(&mut ebpf)?;
    net.attach(&mut ebpf);
    // Go processes are one signal among several: without it, carry on.
    let mut go = match GoRuntimeSource::new(&mut ebpf, &tracefs, config.go_processes.clone()) {
        Ok(mut go) => {
            go.poll(&mut ebpf);
            Some(go)
        }
        Err(err) => {
            tracing::warn!("{err}; Go GC cycles are not traced");
            None
        }
    };
    let go_watched = go.as_ref().map_or(0, GoRuntimeSource::watched);
    let go_found = go.as_ref().map_or("-", GoRuntimeSource::discovery);
    // memcg signals are optional: a host without them still runs the rest.
    let oom = match OomSource::prepare(&tracefs).and_then(|o| o.attach(&mut ebpf).map(|()| o)) {
        Ok(o) => Some(o),
        Err(err) => {
            tracing::warn!("memcg.oom_kill unavailable: {err}");
            None
        }
    };
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
        Ok(root) => Some(KernelMemcg::attach(&mut ebpf, root.clone(), config.memcg_throttle, config.memcg_reclaim)),
        Err(err) => {
            tracing::warn!("memcg signals memcg.throttle, memcg.reclaim unavailable: {err}");
            None
        }
    };
    // The `stat` reclaim mechanism is read by the memory.events watcher.
    let reclaim_stat = memcg_kernel.as_ref().is_some_and(|k| k.reclaim_via == Ok(memcg::Reclaim::Stat));
    let mut memcg_watch = match memcg_root
        .clone()
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
            "memory.events via {}; pressure: {}; {}",
            w.mechanism().name(),
            w.pressure().map_or("unavailable (no PSI)", memcg::Pressure::name),
            k.describe()
        ),
        _ => "unavailable".to_string(),
    };
    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS missing")?)?;
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)?;
    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;

    let mut state = State {
        resets,
        aborts: AbortOnData::default(),
        go: go.take(),
        oom,
        memcg: memcg_kernel,
        extra: Vec::new(),
        net,
        cgroups: CgroupPaths::new(),
        clock: Clock::now(),
        live: LiveView::new(config.quiet),
        jsonl: &mut jsonl,
    };
    eprintln!(
        "observer: ready: tcp resets: {reset_mechanism}; {} attached; go: {go_watched} processes watched (selected: {}; found by {go_found}); memcg: {memcg_text}; oom kills: {}; writing {}",
        state.net.attached(),
        config.go_processes,
        if state.oom.is_some() { "oom:mark_victim" } else { "unavailable" },
        state.jsonl.path().display()
    );

    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let deadline = tokio::time::sleep(config.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // The programs wake us only when a batch is waiting; this picks up the rest.
    let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                state.drain(guard.get_inner_mut(), false)?;
                guard.clear_ready();
                state.poll_go(&mut ebpf);
            }
            _ = drain_tick.tick() => {
                state.drain(ring.get_mut(), false)?;
                state.poll_go(&mut ebpf);
            }
            Some((ts, event)) = recv_memcg(memcg_watch.as_mut()) => state.write_at(ts, event)?,
            _ = tick.tick() => {
                state.net_summaries()?;
                state.memcg_summaries()?;
                state.jsonl.flush()?;
                state.live.extra = state.net.status_text();
                state.live.status(lost(&counters));
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline, if config.duration.is_some() => break,
        }
    }
    // Detach first so nothing new arrives, then take what is left.
    drop(ebpf);
    state.drain(ring.get_mut(), true)?;
    if let Some(w) = memcg_watch.as_mut() {
        w.stop();
        while let Ok((ts, event)) = w.rx.try_recv() {
            state.write_at(ts, event)?;
        }
    }
    state.net_summaries()?;
    state.memcg_summaries()?;
    state.jsonl.flush()?;
    state.live.clear_status();
    eprintln!("observer: stopped events={} lost={}{}", state.live.events, lost(&counters), state.net.stopped_text());
    Ok(())
}

trait OrDefaultOffsets {
    fn unwrap_or_default_offsets(self) -> (observer_common::kernel::KernelOffsets, Vec<String>);
}

impl OrDefaultOffsets for Option<(observer_common::kernel::KernelOffsets, Vec<String>)> {
    fn unwrap_or_default_offsets(self) -> (observer_common::kernel::KernelOffsets, Vec<String>) {
        self.unwrap_or((observer_common::kernel::KernelOffsets::UNKNOWN, Vec::new()))
    }
}

/// The next `memory.events` change; never ready without a watcher.
async fn recv_memcg(watch: Option<&mut MemcgWatcher>) -> Option<memcg::events::Change> {
    match watch {
        Some(w) => w.rx.recv().await,
        None => std::future::pending().await,
    }
}

fn lost(counters: &PerCpuArray<MapData, u64>) -> u64 {
    counters.get(&counter::LOST, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0)
}

struct State<'a> {
    resets: ResetSource,
    aborts: AbortOnData,
    go: Option<GoRuntimeSource>,
    oom: Option<OomSource>,
    memcg: Option<KernelMemcg>,
    /// Records beyond the first that one ring buffer item produced.
    extra: Vec<Record>,
    net: NetSources,
    cgroups: CgroupPaths,
    clock: Clock,
    live: LiveView,
    jsonl: &'a mut JsonlWriter,
}

impl State<'_> {
    /// Takes what the ring buffer holds; `last` also releases every record
    /// still held back by the abort-on-data filter.
    fn drain(&mut self, ring: &mut RingBuf<MapData>, last: bool) -> Result<()> {
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            if let Some(record) = self.record(&item) {
                self.aborts.admit(record, &mut out);
            }
            for record in std::mem::take(&mut self.extra) {
                self.aborts.admit(record, &mut out);
            }
        }
        self.aborts.release(last, &mut out);
        for record in &out {
            self.jsonl.write(record)?;
            self.live.event(record);
        }
        Ok(())
    }

    /// Acts on the process events drained so far and on due `/proc` scans
    /// (attach and detach lines are printed: the status line goes first).
    fn poll_go(&mut self, ebpf: &mut aya::Ebpf) {
        if let Some(go) = self.go.as_mut()
            && go.due()
        {
            self.live.clear_status();
            go.poll(ebpf);
        }
    }

    /// Writes an event found outside the ring buffer at CLOCK_MONOTONIC `ts`.
    fn write_at(&mut self, ts: u64, event: Event) -> Result<()> {
        let (time, time_unix_nano) = self.clock.wall(ts);
        let record = Record { time, time_unix_nano, event };
        self.jsonl.write(&record)?;
        self.live.event(&record);
        Ok(())
    }

    /// Writes the idle `mem_cgroup_handle_over_high` entries that grew.
    fn memcg_summaries(&mut self) -> Result<()> {
        let Some(memcg) = self.memcg.as_mut() else { return Ok(()) };
        let events = memcg.idle_summaries(&mut self.cgroups, false);
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(ns).unwrap_or(0);
        for event in events {
            self.write_at(u64::try_from(now).unwrap_or(0), event)?;
        }
        Ok(())
    }

    /// Writes the drop counts that grew since the last call.
    fn net_summaries(&mut self) -> Result<()> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(ns).unwrap_or(0);
        let (time, time_unix_nano) = self.clock.wall(u64::try_from(now).unwrap_or(0));
        for event in self.net.summaries() {
            let record = Record { time: time.clone(), time_unix_nano, event };
            self.jsonl.write(&record)?;
            self.live.event(&record);
        }
        Ok(())
    }

    fn record(&mut self, bytes: &[u8]) -> Option<Record> {
        let header: EventHeader = read(bytes)?;
        let event = match EventKind::from_u32(header.kind)? {
            kind @ (EventKind::ProcessExec | EventKind::ProcessExit) => {
                // Not an event of its own: tells the Go source what started and ended.
                let raw: ProcessEvent = read(bytes)?;
                self.go.as_mut()?.process_event(kind, &raw);
                return None;
            }
            EventKind::TcpReset => {
                let raw: TcpResetEvent = read(bytes)?;
                let (direction, mut decoded) = self.resets.decode(&raw)?;
                // Kernels whose record has no state still let us read the socket's.
                decoded.state = decoded.state.or_else(|| tcp::tcp_state_name(i32::from(raw.sk_state)));
                let who = self.attribution(&raw);
                Event::TcpReset(tcp::to_event(direction, decoded, raw.netns, who))
            }
            kind @ (EventKind::NetDrop | EventKind::TcpRetransmit) => {
                self.net.record(kind, bytes, &mut self.cgroups)?
            }
            EventKind::OomVictim => {
                let raw: OomVictimEvent = read(bytes)?;
                Event::MemcgOomKill(self.oom.as_ref()?.decode(&raw, &mut self.cgroups)?)
            }
            EventKind::MemcgThrottle => {
                let raw: MemcgThrottleEvent = read(bytes)?;
                let memcg = self.memcg.as_mut()?;
                memcg.watch_idle(raw.cgroup_id);
                memcg.throttle_event(&raw, &mut self.cgroups)
            }
            EventKind::MemcgReclaim => {
                let raw: MemcgReclaimEvent = read(bytes)?;
                let mut events = self.memcg.as_ref()?.reclaim_events(&raw, &mut self.cgroups).into_iter();
                let first = events.next()?;
                let (time, time_unix_nano) = self.clock.wall(raw.header.ts_ns);
                self.extra.extend(events.map(|event| Record { time: time.clone(), time_unix_nano, event }));
                first
            }
            kind @ (EventKind::GoGc | EventKind::GoAssist | EventKind::GoHeapGrow | EventKind::GoScavenge) => {
                let clock = &self.clock;
                self.go.as_ref()?.decode(kind, bytes, &|ns| clock.wall(ns), &mut self.cgroups)?
            }
        };
        let (time, time_unix_nano) = self.clock.wall(header.ts_ns);
        Some(Record { time, time_unix_nano, event })
    }

    /// The socket's owner when the kernel had a full socket. A reset with no
    /// full socket (a closed port, a time-wait socket) belongs to no cgroup:
    /// the kernel sends it from softirq on whatever task the CPU interrupted,
    /// so only its network namespace says where it happened.
    ///
    /// The current task is reported only when it plausibly is the owner: the
    /// socket still has one, and the task shares its namespace and cgroup (a
    /// softirq can still land on another task of the same container).
    fn attribution(&mut self, ev: &TcpResetEvent) -> Attribution {
        let (cgroup_id, cgroup_source) = if ev.sk_full == 1 && ev.sk_cgroup_id != 0 {
            (Some(ev.sk_cgroup_id), CgroupSource::Socket)
        } else {
            (None, CgroupSource::None)
        };
        let task_meaningful = cgroup_source == CgroupSource::Socket
            && ev.sk_owned == 1
            && ev.pid != 0
            && ev.netns == ev.task_netns
            && ev.sk_cgroup_id == ev.task_cgroup_id;
        Attribution {
            pid: task_meaningful.then_some(ev.pid),
            comm: task_meaningful.then(|| comm(&ev.comm)),
            ..self.cgroups.attribute(cgroup_id, cgroup_source)
        }
    }
}

/// Reads a `#[repr(C)]` record from the start of a ring buffer item.
pub(crate) fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>())
        // SAFETY: length checked; T is plain old data; the read is unaligned-safe.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

pub(crate) fn comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Maps the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
struct Clock {
    realtime_minus_monotonic: i128,
}

impl Clock {
    fn now() -> Self {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map(ns).unwrap_or(0);
        let real = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME).map(ns).unwrap_or(0);
        Self { realtime_minus_monotonic: real - mono }
    }

    fn wall(&self, monotonic_ns: u64) -> (String, u64) {
        let unix = i128::from(monotonic_ns) + self.realtime_minus_monotonic;
        let text = time::OffsetDateTime::from_unix_timestamp_nanos(unix)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        (text, u64::try_from(unix).unwrap_or(0))
    }
}

fn ns(t: nix::sys::time::TimeSpec) -> i128 {
    i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
}
