//! The profiler as the agent drives it: drains the kernel's counts (CPU and
//! allocation samples) every [`SLICE`], writes each process's rolling
//! windows, and cuts the profiles of each episode as it closes.

use std::{collections::HashMap, sync::Arc, time::Duration};

use super::{
    KEEP, ProfileKind, SLICE,
    counts::{KernelCounts, SampleKind},
    maps::ProcessMaps,
    pprof::{CpuMeta, Meta},
    sampler::{CpuSampler, SamplerError},
    slices::{History, Slice, Who},
    writer::{Job, ProfileWriter},
};
use crate::{
    correlate::episode::{Episode, ProfileRef},
    export::metrics::SourceMetric,
    export::{
        disk::{Disk, WHOLE_FILES_DIR},
        otlp::{profile_export::ProfileExport, profiles::EpisodeLink},
    },
};

pub struct Profiler {
    counts: KernelCounts,
    /// `None` with `--profile-hz 0`: allocation profiles only.
    sampler: Option<CpuSampler>,
    history: History,
    writer: ProfileWriter,
    window_ns: u64,
    window_start: u64,
    last_drain: u64,
    /// Each watched or sampled process's mappings (re-read when a sample
    /// falls outside them), and whether it was gone at the last drain.
    maps: HashMap<u32, (Arc<ProcessMaps>, bool)>,
    samples: u64,
    alloc_samples: u64,
    /// Episode profiles to the collector, when an endpoint is set.
    export: Option<ProfileExport>,
}

impl Profiler {
    /// CPU sampling at `hz` (0: none) and allocation sampling (the Go
    /// runtime source attaches its probes).
    pub fn start(
        ebpf: &mut aya::Ebpf,
        hz: u64,
        window: Duration,
        disk: Arc<Disk>,
        now_unix_nano: u64,
    ) -> Result<Profiler, SamplerError> {
        let counts = KernelCounts::take(ebpf)?;
        let sampler = if hz > 0 { Some(CpuSampler::start(ebpf, hz)?) } else { None };
        let writer = ProfileWriter::start(disk).map_err(SamplerError::Writer)?;
        Ok(Profiler {
            counts,
            sampler,
            history: History::new(KEEP),
            writer,
            window_ns: nanos(window),
            window_start: now_unix_nano,
            last_drain: now_unix_nano,
            maps: HashMap::new(),
            samples: 0,
            alloc_samples: 0,
            export: None,
        })
    }

    /// `CPU (19 Hz per CPU, cpu-clock) and allocation profiles of watched Go
    /// processes to profiles/` (and where episode profiles are sent).
    pub fn ready(&self) -> String {
        let sent = self.export.as_ref().map(|e| format!(", episodes' to {}", e.destination())).unwrap_or_default();
        match &self.sampler {
            Some(s) => format!(
                "CPU ({} Hz per CPU, {}) and allocation profiles of watched Go processes to {WHOLE_FILES_DIR}/{sent}",
                s.hz,
                s.clock.name()
            ),
            None => format!("allocation profiles of watched Go processes to {WHOLE_FILES_DIR}/{sent}"),
        }
    }

    /// ` profiles=3 profile_samples=190` (and what was not written).
    pub fn stopped_text(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.writer.counters;
        let mut s = format!(
            " profiles={} profile_samples={} alloc_samples={}",
            c.written.load(Relaxed),
            self.samples,
            self.alloc_samples
        );
        for (name, n) in [("profiles_dropped", &c.dropped), ("profiles_failed", &c.failed)] {
            let n = n.load(Relaxed);
            if n > 0 {
                s.push_str(&format!(" {name}={n}"));
            }
        }
        s.extend(self.export.as_ref().map(ProfileExport::stopped_text));
        s
    }

    /// `/metrics`: profiles written, and those that were not.
    pub fn metrics(&self) -> Vec<SourceMetric> {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.writer.counters;
        let m = |name, help, n: &std::sync::atomic::AtomicU64| SourceMetric {
            name,
            help,
            counter: true,
            value: n.load(Relaxed),
        };
        vec![
            m("profiles_written", "profile files written (pprof)", &c.written),
            m("profiles_dropped", "profiles not written: the writer's queue was full", &c.dropped),
            m("profiles_failed", "profiles not written: the disk refused them", &c.failed),
        ]
    }

    /// Sends each episode's profile to the collector too.
    pub fn export_to(&mut self, export: ProfileExport) {
        self.export = Some(export);
    }

    /// At stop, after [`Profiler::finish`]: the export, to flush.
    pub fn export(&self) -> Option<&ProfileExport> {
        self.export.as_ref()
    }

    /// Between batches: a drain every [`SLICE`], a window every window.
    pub fn poll(&mut self, now_unix_nano: u64) {
        if now_unix_nano.saturating_sub(self.last_drain) >= nanos(SLICE) {
            self.drain(now_unix_nano);
        }
        if now_unix_nano.saturating_sub(self.window_start) >= self.window_ns {
            self.write_windows(now_unix_nano);
        }
    }

    /// A newly watched process and its mappings, read as it was attached
    /// (a short one is gone by the next drain).
    pub fn watching(&mut self, pid: u32, maps: Arc<ProcessMaps>) {
        self.maps.insert(pid, (maps, false));
    }

    /// Takes what the kernel counted since the last drain.
    pub fn drain(&mut self, now_unix_nano: u64) {
        let samples = self.counts.drain();
        for s in &samples {
            match s.kind {
                SampleKind::Cpu => self.samples += s.count,
                SampleKind::Alloc(_) => self.alloc_samples += s.count,
            }
        }

        let mut maps = HashMap::new();
        for s in &samples {
            if maps.contains_key(&s.tgid) {
                continue;
            }
            let known = self.maps.get(&s.tgid).filter(|(m, _)| s.user.iter().all(|&a| m.find(a).is_some()));
            let m = match known {
                Some((m, _)) => m.clone(),
                None => match ProcessMaps::read(s.tgid) {
                    Ok(read) => Arc::new(read),
                    // Gone: what was read before, else its samples keep their addresses.
                    Err(_) => self.maps.get(&s.tgid).map(|(m, _)| m.clone()).unwrap_or_default(),
                },
            };
            self.maps.insert(s.tgid, (m.clone(), false));
            maps.insert(s.tgid, m);
        }
        // A process gone at two drains in a row has no samples left in the kernel.
        self.maps.retain(|pid, (_, gone)| {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
            let keep = alive || !*gone;
            *gone = !alive;
            keep
        });
        let slice = Slice { start_unix_nano: self.last_drain, end_unix_nano: now_unix_nano, samples, maps };
        self.last_drain = now_unix_nano;
        self.history.push(slice);
    }

    /// One profile per process and kind sampled in the window that ends now.
    fn write_windows(&mut self, now_unix_nano: u64) {
        let (from, to) = (self.window_start + 1, now_unix_nano);
        for kind in [ProfileKind::Cpu, ProfileKind::Alloc] {
            for pid in self.history.processes(kind, from, to) {
                let selection = self.history.select(Who::Process(pid), kind, from, to);
                if selection.samples.is_empty() {
                    continue;
                }
                let exe = selection.maps.get(&pid).and_then(|m| exe_name(m)).unwrap_or_else(|| "unknown".into());
                let start = self.window_start / 1_000_000_000;
                let name = format!("{WHOLE_FILES_DIR}/windows/{exe}-{pid}-{start}.{}.pb.gz", kind.name());
                self.writer.offer(Job { name, selection, meta: self.meta(kind), episode: None });
            }
        }
        self.window_start = now_unix_nano;
    }

    /// The profiles of `episode`'s workload over its span (CPU, allocations),
    /// queued for writing; those with samples (and room in the queue).
    pub fn for_episode(&mut self, episode: &Episode) -> Vec<ProfileRef> {
        [ProfileKind::Cpu, ProfileKind::Alloc]
            .into_iter()
            .filter_map(|kind| self.episode_profile(episode, kind))
            .collect()
    }

    fn episode_profile(&mut self, episode: &Episode, kind: ProfileKind) -> Option<ProfileRef> {
        let w = &episode.workload;
        let who = match (w.pid, w.cgroup_id) {
            (Some(pid), _) => Who::Process(pid),
            (None, Some(id)) => Who::Cgroup(id),
            (None, None) => return None,
        };
        let selection = self.history.select(who, kind, episode.start_unix_nano, episode.end_unix_nano);
        if selection.samples.is_empty() {
            return None;
        }
        let trace: String = episode.root.trace_id.iter().map(|b| format!("{b:02x}")).collect();
        let file = format!("{WHOLE_FILES_DIR}/{trace}.{}.pb.gz", kind.name());
        let profile = ProfileRef {
            kind: kind.name(),
            file: file.clone(),
            id: profile_id(episode.root.trace_id),
            samples: selection.sample_count(),
            start_unix_nano: selection.start_unix_nano,
            end_unix_nano: selection.end_unix_nano,
        };
        let link = EpisodeLink {
            trace_id: episode.root.trace_id,
            span_id: episode.root.span_id,
            profile_id: profile.id,
            workload: episode.workload.clone(),
        };
        let episode = Some((link, self.export.as_ref().map(ProfileExport::sender)));
        self.writer.offer(Job { name: file, selection, meta: self.meta(kind), episode }).then_some(profile)
    }

    /// At stop, before the episodes' flush: profiles wait for it.
    pub fn hold(&self) {
        self.writer.hold();
    }

    /// At stop: the last drain and windows, and the queued profiles written
    /// within `within`; whether all were.
    pub fn finish(&mut self, now_unix_nano: u64, within: Duration) -> bool {
        self.drain(now_unix_nano);
        self.write_windows(now_unix_nano);
        self.writer.finish(within)
    }

    fn meta(&self, kind: ProfileKind) -> Meta {
        match (kind, &self.sampler) {
            (ProfileKind::Cpu, Some(sampler)) => Meta::Cpu(CpuMeta {
                period_ns: sampler.period_ns(),
                comments: vec![format!(
                    "observer: perf_event {} at {} Hz per CPU, frame-pointer stacks",
                    sampler.clock.name(),
                    sampler.hz
                )],
            }),
            _ => Meta::Alloc,
        }
    }
}

/// The file name of the process's first executable mapping (its program).
fn exe_name(maps: &ProcessMaps) -> Option<String> {
    let path = &maps.mappings.first()?.path;
    let name = path.rsplit('/').next()?.split(' ').next()?;
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    (!clean.is_empty()).then_some(clean)
}

/// A profile id: random, else (no `/dev/urandom`) the episode's trace id.
fn profile_id(trace_id: [u8; 16]) -> [u8; 16] {
    let mut id = [0u8; 16];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut id)) {
        Ok(()) => id,
        Err(_) => trace_id,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
