//! `observer run`: wires the stages. Sources decode kernel records into
//! [`Record`]s; each record passes the attribution stage (its workload),
//! then fans out to the sinks: the JSON-lines file (a thread behind a
//! bounded queue), line mode or the live view's model, and the episode
//! engine, whose closed episodes go to the exporters (behind their own
//! bounded queue). The ring buffer is read by a thread of its own that never
//! waits for any of this; nor does the live view's terminal thread, which
//! draws from snapshots the loop leaves for it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, PerCpuArray};
use observer_common::{EventHeader, EventKind, counter};
use tokio::signal::unix::SignalKind;

use crate::export::metrics::SourceMetric;
use crate::export::otlp::profile_export::{ProfileExport, QUEUE as PROFILE_EXPORT_QUEUE};
use crate::export::{metrics::signals::WorkloadSignals, otlp::attributes::record_kind};
use crate::profile::profiler::Profiler;
use crate::{
    cgroup::CgroupPaths,
    config::RunConfig,
    correlate::{Engine, Episode},
    event::Record,
    export::{
        disk::{Disk, DiskStatus},
        jsonl::JsonlWriter,
        live::LiveView,
        metrics::{DiskNumbers, ExportNumbers, Published, Snapshot, server::Endpoints},
        otlp::{EpisodeExport, ExportCounters, file::FILE_NAME},
    },
    kernel::{
        clock::{Clock, RESYNC_EVERY, realtime_ns},
        misses::ProgramMisses,
        privileges,
    },
    netns::NetnsOwners,
    sources::{
        Context, Source,
        attach::{self, Attached},
        memcg::events::MemcgWatcher,
        read,
        ring::{Batch, RingReader},
    },
    view::{
        console,
        model::Model,
        terminal::{Feed, Settings, Terminal},
    },
    workload::attributor::Attributor,
};

/// How often the engine is told the time (closes quiet episodes).
const ADVANCE_EVERY: Duration = Duration::from_millis(250);
/// Closed episodes waiting for an exporter at most; past it they are dropped (counted).
const EXPORT_QUEUE: usize = 1024;
/// From SIGTERM/SIGINT (or `--duration`) to exit, at most, whatever the
/// collector does: the export flush gets what is left of it.
pub const STOP_WITHIN: Duration = Duration::from_secs(5);
/// Longest the exporters get to deliver what is queued at stop.
const FLUSH_WITHIN: Duration = Duration::from_secs(3);
/// Kept back from the flush for what follows it (closing files, the live
/// view, the runtime's own shutdown).
const AFTER_FLUSH: Duration = Duration::from_millis(1500);
/// Of that, what waiting for the detach thread leaves for the rest.
const DETACH_LEFT: Duration = Duration::from_millis(500);

/// `live_view`: draw the live view on the terminal (else line mode).
pub async fn run(config: RunConfig, live_view: bool) -> Result<()> {
    privileges::check()?;
    for line in privileges::missing_lines() {
        tracing::warn!("{line}");
    }
    // Before anything is attached: a bad output directory or exporter costs nothing.
    let disk = Disk::create(&config.output_dir, config.disk_budget)?;
    let jsonl = match config.events_file {
        true => Some(JsonlWriter::create(&disk)?),
        false => None,
    };
    let export = EpisodeExport::start(&disk, config.otlp.clone(), config.node.clone(), EXPORT_QUEUE)
        .context("starting the exporters")?;
    // Before anything is attached too: a bad kubeconfig is a start-up error;
    // an API server that does not answer is not (the watch retries).
    let pods = match &config.kubernetes {
        Some(settings) => {
            let (store, url) = crate::kube::start(settings).await.context("Kubernetes metadata (--kubernetes)")?;
            Some((store, url, settings.node_name.clone()))
        }
        None => None,
    };
    let published = Published::new();
    if let Some((store, ..)) = &pods {
        published.set_pods(store.clone());
    }
    let endpoints = match config.listen {
        Some(addr) => Some(
            Endpoints::start(addr, published.clone())
                .await
                .with_context(|| format!("cannot listen on {addr} for /metrics (--listen ADDR:PORT, or none)"))?,
        ),
        None => None,
    };
    privileges::raise_memlock();
    let Attached { mut ebpf, sources, mut memcg_watch, ring, counters, memcg_text, signals } =
        attach::all(&config, attach::Purpose::Run)?;
    let signals_file = config.output_dir.join(crate::sources::signals::FILE);
    if let Err(e) = signals.write(&signals_file) {
        tracing::warn!("cannot write {}: {e}", signals_file.display());
    }
    let misses = ProgramMisses::of(&ebpf);
    let mut reader = RingReader::start(ring).context("starting the ring buffer reader")?;
    let pod_store = pods.as_ref().map(|(store, ..)| store.clone());
    let mut pipeline = Pipeline::new(sources, &config, jsonl, export, live_view, pod_store);
    {
        let now = pipeline.clock.now_unix_nano();
        match Profiler::start(&mut ebpf, config.profile_hz, config.profile_window, disk.clone(), now) {
            Ok(p) => pipeline.profiler = Some(p),
            Err(e) => tracing::warn!("profiles unavailable: {e}"),
        }
        if let (Some(p), Some(otlp)) = (&mut pipeline.profiler, &config.otlp) {
            match ProfileExport::start(otlp, config.node.clone(), PROFILE_EXPORT_QUEUE) {
                Ok(Some(export)) => p.export_to(export),
                Ok(None) => tracing::info!("episode profiles are not sent: the endpoint is traces-only"),
                Err(e) => tracing::warn!("episode profiles are not sent to the collector: {e}"),
            }
        }
    }
    let mut ready: Vec<String> = pipeline.sources.iter().map(|s| s.ready()).filter(|s| !s.is_empty()).collect();
    ready.extend(pipeline.profiler.as_ref().map(Profiler::ready));
    ready.push(memcg_text);
    ready.push(pipeline.writing());
    if let Some((_, url, node)) = &pods {
        ready.push(format!("watching the pods of node {node} at {url}"));
    }
    if let Some(e) = &endpoints {
        // `/readyz on http://` ends the list: the tests read the address after it.
        let pods = if pods.is_some() { "/pods, " } else { "" };
        ready.push(format!("serving /metrics, {pods}/healthz, /readyz on http://{}", e.addr));
    }
    published.set_ready(signals.list().to_vec());
    console::line(&format!("observer: ready: {}", ready.join("; ")));
    let quit = Arc::new(tokio::sync::Notify::new());
    let mut terminal = None;
    if live_view {
        let on_quit = quit.clone();
        let settings = Settings {
            node: config.node.clone(),
            trace_file: config.output_dir.join(FILE_NAME),
            on_quit: Box::new(move || on_quit.notify_one()),
        };
        match Terminal::start(settings) {
            Ok((t, feed)) => {
                terminal = Some(t);
                pipeline.view = Some(LiveModel { model: Model::new(), feed, interval_start: Instant::now() });
            }
            Err(e) => {
                console::line(&format!("observer: cannot open the live view ({e}); printing lines instead"));
                pipeline.live = LiveView::plain(config.events, config.quiet, config.event_lines_per_sec);
            }
        }
    }

    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let deadline = tokio::time::sleep(config.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut advance = tokio::time::interval(ADVANCE_EVERY);
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    loop {
        tokio::select! {
            Some(batch) = reader.rx.recv() => {
                pipeline.batch(&batch, false);
                pipeline.poll(&mut ebpf);
            }
            Some((ts, event)) = recv_memcg(memcg_watch.as_mut()) => pipeline.emit_at(ts, event),
            _ = advance.tick() => {
                pipeline.poll(&mut ebpf);
                pipeline.poll_profiles();
                pipeline.advance();
            }
            _ = tick.tick() => {
                pipeline.tick(false);
                let (lost, dropped, missed, disk) = (lost(&counters), reader.dropped(), misses.total(), disk.status());
                pipeline.status(lost + dropped, missed, &disk);
                let each = misses.each().into_iter().map(|(p, n)| (p.to_string(), n)).collect();
                let mut snapshot = pipeline.snapshot(lost_by_signal(&counters), dropped, each, &disk);
                snapshot.sources.extend(profile_kernel_metrics(&counters));
                published.publish(snapshot);
                if let Some(e) = &endpoints {
                    e.beat();
                }
            }
            _ = resync.tick() => pipeline.resync_clock(),
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = quit.notified() => break,
            _ = &mut deadline, if config.duration.is_some() => break,
        }
    }
    let mut stop = Stop::begin();
    // Stop sampling: the reader takes what the ring buffer holds now and
    // ends. Detaching (seconds with many uprobes) runs meanwhile on a thread
    // of its own, so that the flush below gets its time whatever it costs.
    let detach = Detach::start(ebpf);
    reader.stop();
    while let Some(batch) = reader.rx.recv().await {
        pipeline.batch(&batch, false);
    }
    if let Some(w) = memcg_watch.as_mut() {
        w.stop();
        while let Ok((ts, event)) = w.rx.try_recv() {
            pipeline.emit_at(ts, event);
        }
    }
    pipeline.batch(&Batch::default(), true);
    pipeline.tick(true);
    let lost = lost(&counters) + reader.dropped();
    pipeline.finish(&mut stop).await;
    stop.detach_took = detach.wait(stop.began + STOP_WITHIN.saturating_sub(DETACH_LEFT));
    if let Some(t) = terminal {
        t.stop();
    }
    let end = format!("{}{}", misses.text(), disk.status().text());
    console::line(&format!("observer: stopped {} {}", pipeline.stopped_text(lost, &end), stop.text()));
    Ok(())
}

/// Removing every program and probe, on a thread of its own.
struct Detach {
    done: std::sync::mpsc::Receiver<Duration>,
}

impl Detach {
    fn start(ebpf: aya::Ebpf) -> Detach {
        let (tx, done) = std::sync::mpsc::channel();
        let began = Instant::now();
        let spawned = std::thread::Builder::new().name("detach".into()).spawn(move || {
            drop(ebpf);
            let _ = tx.send(began.elapsed());
        });
        // A thread that cannot start drops the closure, and with it every program, here.
        if let Err(e) = spawned {
            tracing::warn!("cannot start the detach thread ({e}): detached inline");
        }
        Detach { done }
    }

    /// How long it took; `None` when still detaching at `by` (the process's
    /// exit closes what is left: the kernel's time, not ours).
    fn wait(self, by: Instant) -> Option<Duration> {
        self.done.recv_timeout(by.saturating_duration_since(Instant::now())).ok()
    }
}

/// The stop, from the signal on: its deadline and what the flush did.
struct Stop {
    began: Instant,
    /// Episodes still open, closed by the stop.
    closed: u64,
    /// Delivered during the flush, and counted as dropped at its end (the
    /// collector's exporter when there is one, else the file's).
    flushed: u64,
    unflushed: u64,
    /// Removing every program and probe (uprobes on Go binaries take the
    /// longest); `None`: not done by the deadline.
    detach_took: Option<Duration>,
    flush_took: Duration,
}

impl Stop {
    fn begin() -> Stop {
        Stop {
            began: Instant::now(),
            closed: 0,
            flushed: 0,
            unflushed: 0,
            detach_took: None,
            flush_took: Duration::ZERO,
        }
    }

    /// How long the exporters may flush: [`FLUSH_WITHIN`], less what the
    /// stop has used, so that it ends by [`STOP_WITHIN`].
    fn flush_budget(&self) -> Duration {
        let left = STOP_WITHIN.saturating_sub(self.began.elapsed()).saturating_sub(AFTER_FLUSH);
        FLUSH_WITHIN.min(left)
    }

    /// `closed_at_stop=1 flushed=0 unflushed=1 detach_ms=40 flush_ms=3000 stop_ms=3052`.
    fn text(&self) -> String {
        format!(
            "closed_at_stop={} flushed={} unflushed={} detach_ms={} flush_ms={} stop_ms={}",
            self.closed,
            self.flushed,
            self.unflushed,
            self.detach_took.map_or("unfinished".to_string(), |d| d.as_millis().to_string()),
            self.flush_took.as_millis(),
            self.began.elapsed().as_millis()
        )
    }
}

/// The next `memory.events` change; never ready without a watcher.
async fn recv_memcg(watch: Option<&mut MemcgWatcher>) -> Option<crate::sources::memcg::events::Change> {
    match watch {
        Some(w) => w.rx.recv().await,
        None => std::future::pending().await,
    }
}

fn lost(counters: &PerCpuArray<MapData, u64>) -> u64 {
    counted(counters, counter::LOST)
}

/// `lost` by the signal whose program found the ring buffer full.
fn lost_by_signal(counters: &PerCpuArray<MapData, u64>) -> Vec<(&'static str, u64)> {
    counter::LOST_BY_SIGNAL.iter().map(|&(index, signal)| (signal, counted(counters, index))).collect()
}

/// What the profile programs counted in the kernel.
fn profile_kernel_metrics(counters: &PerCpuArray<MapData, u64>) -> Vec<SourceMetric> {
    [
        ("profile_cpu_samples", "CPU samples of watched Go processes", counter::CPU_SAMPLES_SEEN),
        (
            "profile_cpu_samples_uncounted",
            "CPU samples in no profile (a slice's count map was full)",
            counter::CPU_SAMPLES_UNCOUNTED,
        ),
        (
            "profile_cpu_stacks_lost",
            "CPU samples without their user stack (the stack map was full)",
            counter::CPU_STACKS_LOST,
        ),
        ("profile_alloc_samples", "allocation samples of watched Go processes", counter::ALLOC_SAMPLES_SEEN),
        (
            "profile_alloc_samples_uncounted",
            "allocation samples in no profile (a slice's count map was full)",
            counter::ALLOC_SAMPLES_UNCOUNTED,
        ),
        (
            "profile_alloc_stacks_lost",
            "allocation samples without their stack (the stack map was full)",
            counter::ALLOC_STACKS_LOST,
        ),
    ]
    .into_iter()
    .map(|(name, help, index)| SourceMetric { name, help, counter: true, value: counted(counters, index) })
    .collect()
}

/// One counter, summed over the CPUs.
fn counted(counters: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
    counters.get(&index, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0)
}

/// The live view's model and where its snapshots go.
struct LiveModel {
    model: Model,
    feed: Feed,
    interval_start: Instant,
}

/// Everything between the ring buffer and the sinks.
struct Pipeline {
    sources: Vec<Box<dyn Source>>,
    /// Which source decodes a record kind (`EventKind` value → index).
    dispatch: Vec<Option<usize>>,
    cgroups: CgroupPaths,
    netns: NetnsOwners,
    clock: Clock,
    attributor: Attributor,
    engine: Engine,
    /// Line mode (or, with the live view, the event count only).
    live: LiveView,
    view: Option<LiveModel>,
    jsonl: Option<JsonlWriter>,
    /// Taken at stop, to be flushed.
    export: Option<EpisodeExport>,
    /// Its counters, still readable after it stopped.
    exported: Arc<ExportCounters>,
    /// CPU (`--profile-hz`) and allocation profiles, when the kernel let us sample.
    profiler: Option<Profiler>,
    /// Reused between batches.
    decoded: Vec<Record>,
    /// Records by kind name, for `/metrics`.
    records: std::collections::BTreeMap<&'static str, u64>,
    workload_signals: WorkloadSignals,
    /// This node's pods (the attributor has them too), for `/metrics`.
    pods: Option<Arc<crate::kube::PodStore>>,
}

impl Pipeline {
    fn new(
        sources: Vec<Box<dyn Source>>,
        config: &RunConfig,
        jsonl: Option<JsonlWriter>,
        export: EpisodeExport,
        live_view: bool,
        pods: Option<Arc<crate::kube::PodStore>>,
    ) -> Self {
        let mut dispatch = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            for &kind in source.kinds() {
                let k = kind as usize;
                if dispatch.len() <= k {
                    dispatch.resize(k + 1, None);
                }
                dispatch[k] = Some(i);
            }
        }
        Self {
            sources,
            dispatch,
            cgroups: CgroupPaths::new(),
            netns: NetnsOwners::new(),
            clock: Clock::now(),
            attributor: Attributor::new().with_pods(pods.clone()),
            engine: Engine::new(config.episodes.clone(), seed()),
            live: match live_view {
                true => LiveView::silent(),
                false => LiveView::plain(config.events, config.quiet, config.event_lines_per_sec),
            },
            view: None,
            jsonl,
            exported: export.counters(),
            export: Some(export),
            profiler: None,
            decoded: Vec::new(),
            records: Default::default(),
            workload_signals: WorkloadSignals::new(),
            pods,
        }
    }

    /// Decodes a batch of ring buffer records; `last` also releases every
    /// record a source still holds back.
    fn batch(&mut self, batch: &Batch, last: bool) {
        let mut out = std::mem::take(&mut self.decoded);
        let mut cx = Context { cgroups: &mut self.cgroups, netns: &mut self.netns, clock: &self.clock };
        for bytes in batch.iter() {
            let Some(header) = read::<EventHeader>(bytes) else { continue };
            let Some(kind) = EventKind::from_u32(header.kind) else { continue };
            if let Some(&Some(i)) = self.dispatch.get(kind as usize) {
                self.sources[i].decode(kind, bytes, &mut cx, &mut out);
            }
        }
        for source in &mut self.sources {
            source.flush(last, &mut out);
        }
        for record in out.drain(..) {
            self.emit(record);
        }
        self.decoded = out;
    }

    /// Summaries of what the kernel counted, about once a second.
    fn tick(&mut self, last: bool) {
        let mut out = Vec::new();
        let mut cx = Context { cgroups: &mut self.cgroups, netns: &mut self.netns, clock: &self.clock };
        for source in &mut self.sources {
            source.tick(&mut cx, last, &mut out);
        }
        for record in out {
            self.emit(record);
        }
    }

    /// Slow work of the sources (attaching to new processes), between batches.
    fn poll(&mut self, ebpf: &mut aya::Ebpf) {
        for source in &mut self.sources {
            source.poll(ebpf);
        }
    }

    /// An event found outside the ring buffer, at CLOCK_MONOTONIC `ts`.
    fn emit_at(&mut self, ts: u64, event: crate::event::Event) {
        let (time, time_unix_nano) = self.clock.wall(ts);
        self.emit(Record { time, time_unix_nano, event });
    }

    /// One record through the attribution stage to every sink.
    fn emit(&mut self, record: Record) {
        if let (Some(p), crate::event::Event::GoAttach(a)) = (&mut self.profiler, &record.event)
            && let Some(pid) = a.owner.who.pid
        {
            // Its mappings while it lives: it may be gone by the next drain.
            if let Some(maps) = &a.mappings {
                p.watching(pid, maps.clone());
            }
        }
        if let Some(jsonl) = &self.jsonl {
            jsonl.write(&record);
        }
        self.live.event(&record);
        *self.records.entry(record_kind(&record.event)).or_default() += 1;
        if let Some(attributed) = self.attributor.attribute(record, &mut self.netns) {
            self.workload_signals.observe(&attributed);
            if let Some(v) = &mut self.view {
                v.model.record(&attributed);
            }
            self.engine.push(attributed);
        }
    }

    fn advance(&mut self) {
        // The records' own clock: during a slew it is not CLOCK_REALTIME.
        let closed = self.engine.advance(self.clock.now_unix_nano());
        self.closed(closed);
        self.publish();
    }

    /// The live view's next frame: the open episodes now, and a snapshot.
    fn publish(&mut self) {
        if let Some(v) = &mut self.view {
            v.model.set_open(self.engine.open_episodes());
            v.feed.publish(v.model.snapshot());
        }
    }

    /// Drains the kernel's CPU samples when due, and writes windows.
    fn poll_profiles(&mut self) {
        let now = self.clock.now_unix_nano();
        if let Some(p) = &mut self.profiler {
            p.poll(now);
        }
    }

    fn closed(&mut self, mut episodes: Vec<Episode>) {
        if let Some(p) = &mut self.profiler
            && !episodes.is_empty()
        {
            // Up to now: the episode's last seconds are still in the kernel.
            p.drain(self.clock.now_unix_nano());
            for episode in &mut episodes {
                episode.profiles.extend(p.for_episode(episode));
            }
        }
        for episode in episodes {
            self.live.episode(&episode);
            let episode = Arc::new(episode);
            if let Some(v) = &mut self.view {
                v.model.closed(episode.clone());
            }
            if let Some(export) = &self.export {
                export.offer(episode);
            }
        }
    }

    /// `missed`: runs of our programs the kernel skipped (`kernel::misses`).
    fn status(&mut self, lost: u64, missed: u64, disk: &DiskStatus) {
        let mut parts: Vec<String> = self.sources.iter().filter_map(|s| s.status()).collect();
        if missed > 0 {
            parts.push(format!("missed={missed}"));
        }
        if disk.removed > 0 || disk.stopped.is_some() {
            parts.push(disk.text().trim_start().to_string());
        }
        parts.push(self.episodes_text());
        self.live.extra = Some(parts.join(" "));
        self.live.status(lost);
        if let Some(v) = &mut self.view {
            let text = self.live.status_text(lost);
            v.model.set_status(text.strip_prefix("observer: ").unwrap_or(&text).to_string());
            v.model.interval(v.interval_start.elapsed());
            v.interval_start = Instant::now();
        }
    }

    /// What `/metrics` shows, now.
    fn snapshot(
        &self,
        ring_lost: Vec<(&'static str, u64)>,
        reader_dropped: u64,
        program_misses: Vec<(String, u64)>,
        disk: &DiskStatus,
    ) -> Snapshot {
        let c = &self.exported;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        let (clock_steps, clock_slews) = self.clock.changes();
        Snapshot {
            records: self.records.iter().map(|(k, n)| (*k, *n)).collect(),
            ring_lost,
            reader_dropped,
            program_misses,
            episodes: self.engine.stats(),
            export: ExportNumbers {
                queued: load(&c.queued),
                exported: load(&c.exported),
                dropped: c.dropped(),
                failed: load(&c.failed),
                retried: load(&c.retried),
            },
            events_file_dropped: self.jsonl.as_ref().map_or(0, JsonlWriter::dropped),
            disk: DiskNumbers {
                used: disk.used,
                budget: disk.budget,
                removed: disk.removed,
                writing_stopped: disk.stopped.is_some(),
            },
            clock_steps,
            clock_slews,
            sources: self
                .sources
                .iter()
                .flat_map(|s| s.metrics())
                .chain(self.pods.iter().flat_map(|p| p.metrics()))
                .chain(self.profiler.iter().flat_map(Profiler::metrics))
                .collect(),
            workloads: self.workload_signals.snapshot(),
        }
    }

    fn episodes_text(&self) -> String {
        let s = self.engine.stats();
        let jsonl = self.jsonl.as_ref().map_or(0, JsonlWriter::dropped);
        format!(
            "episodes={} open={} late={} capped={} {} events_file_dropped={jsonl}",
            s.closed,
            s.open,
            s.late,
            s.capped,
            self.export.as_ref().map(EpisodeExport::status_text).unwrap_or_default()
        )
    }

    fn writing(&self) -> String {
        let events = self.jsonl.as_ref().map(|j| format!("{}, ", j.path().display())).unwrap_or_default();
        let episodes = self.export.as_ref().map(EpisodeExport::describe).unwrap_or_default();
        format!("writing {events}episodes to {episodes}")
    }

    /// Follows a step of the wall clock (see `kernel::clock`).
    fn resync_clock(&mut self) {
        if let Some(change) = self.clock.resync() {
            console::line(&format!("observer: wall clock {change}; mapping kernel times with the new offset"));
        }
    }

    /// Closes every open episode and delivers what can be delivered by the
    /// stop's deadline.
    async fn finish(&mut self, stop: &mut Stop) {
        if let Some(p) = &self.profiler {
            p.hold();
        }
        let closed = self.engine.finish(self.clock.now_unix_nano());
        stop.closed = closed.len() as u64;
        self.closed(closed);
        if let Some(export) = self.export.take() {
            let c = &self.exported;
            let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
            let (exported, dropped) = (load(&c.exported), load(&c.dropped_stopped));
            let flush = Instant::now();
            export.shutdown(stop.flush_budget()).await;
            stop.flush_took = flush.elapsed();
            stop.flushed = load(&c.exported) - exported;
            stop.unflushed = load(&c.dropped_stopped) - dropped;
        }
        // After the flush: the episodes go first; profiles get what is left
        // of the stop (symbolizing a large binary takes seconds under load).
        if let Some(p) = &mut self.profiler {
            let left = STOP_WITHIN.saturating_sub(stop.began.elapsed()).saturating_sub(AFTER_FLUSH);
            if !p.finish(self.clock.now_unix_nano(), left) {
                tracing::warn!("profiles still being written at the stop deadline were not written");
            }
            if let Some(export) = p.export() {
                let left = STOP_WITHIN.saturating_sub(stop.began.elapsed()).saturating_sub(DETACH_LEFT);
                export.shutdown(left).await;
            }
        }
        if let Some(jsonl) = self.jsonl.as_mut() {
            jsonl.close();
        }
        self.live.finish();
        self.publish();
    }

    /// `end`: the kernel's missed runs and the disk, after `lost`.
    fn stopped_text(&self, lost: u64, end: &str) -> String {
        let mut extra: String = self.sources.iter().map(|s| s.stopped()).collect();
        extra.extend(self.profiler.as_ref().map(Profiler::stopped_text));
        let s = self.engine.stats();
        let c = &self.exported;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        let (steps, slews) = self.clock.changes();
        format!(
            "events={} lost={lost}{end}{extra} episodes={} late={} capped={} exported={} dropped={} failed={} events_file_dropped={}{} clock_steps={steps} clock_slews={slews}",
            self.live.events,
            s.closed,
            s.late,
            s.capped,
            load(&c.exported),
            c.dropped(),
            load(&c.failed),
            self.jsonl.as_ref().map_or(0, JsonlWriter::dropped),
            self.live.skipped_text(),
        )
    }
}

/// A seed for trace and span ids: different in every run.
fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).is_err() {
        return realtime_ns() ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop_begun(ago: Duration) -> Stop {
        Stop { began: Instant::now() - ago, ..Stop::begin() }
    }

    #[test]
    fn the_flush_gets_what_is_left_of_the_stop_deadline() {
        assert_eq!(stop_begun(Duration::ZERO).flush_budget(), FLUSH_WITHIN, "at once: all of it");
        let late = stop_begun(Duration::from_secs(2)).flush_budget();
        assert!(late <= STOP_WITHIN - Duration::from_secs(2) - AFTER_FLUSH, "{late:?}");
        assert!(late >= STOP_WITHIN - Duration::from_secs(2) - AFTER_FLUSH - Duration::from_millis(100), "{late:?}");
        assert_eq!(stop_begun(STOP_WITHIN).flush_budget(), Duration::ZERO, "nothing left: no flush");
        assert!(FLUSH_WITHIN + AFTER_FLUSH <= STOP_WITHIN);
    }
}
