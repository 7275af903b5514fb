//! The agent's own metrics in the Prometheus text format (OpenMetrics),
//! with its health, served on `--listen` (`server`).
//!
//! The pipeline publishes a [`Snapshot`] — plain numbers it already keeps —
//! about once a second; a scrape encodes the latest one. So a scrape never
//! touches the pipeline, and the pipeline never waits for a scrape.

pub mod server;
pub mod signals;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{correlate::EngineStats, sources::signals::SignalState};

use signals::{SignalCounts, WorkloadLabels};

/// A gauge or counter a source keeps (Go processes watched, attach errors).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceMetric {
    /// Without the `observer_` prefix (and, for a counter, its `_total`).
    pub name: &'static str,
    pub help: &'static str,
    pub counter: bool,
    pub value: u64,
}

/// What the pipeline knows, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Records that reached the pipeline, by kind.
    pub records: Vec<(&'static str, u64)>,
    /// Records the kernel programs could not queue (ring buffer full), by
    /// the signal whose program it was.
    pub ring_lost: Vec<(&'static str, u64)>,
    /// Batches the ring-buffer reader could not hand on.
    pub reader_dropped: u64,
    /// Runs of each of our loaded programs the kernel skipped
    /// (`kernel::misses`), zero included, so every program has a series.
    pub program_misses: Vec<(String, u64)>,
    pub episodes: EngineStats,
    pub export: ExportNumbers,
    pub events_file_dropped: u64,
    pub disk: DiskNumbers,
    pub clock_steps: u64,
    pub clock_slews: u64,
    pub sources: Vec<SourceMetric>,
    pub workloads: Vec<(WorkloadLabels, SignalCounts)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ExportNumbers {
    pub queued: u64,
    pub exported: u64,
    pub dropped: u64,
    pub failed: u64,
    pub retried: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DiskNumbers {
    pub used: u64,
    pub budget: u64,
    pub removed: u64,
    pub writing_stopped: bool,
}

/// What the HTTP side reads: the latest snapshot, the signals' mechanisms
/// (fixed once attached) and readiness.
#[derive(Debug, Default)]
pub struct Published {
    snapshot: Mutex<Arc<Snapshot>>,
    signals: Mutex<Vec<SignalState>>,
    ready: AtomicBool,
    /// This node's pods, for `/pods` (Kubernetes metadata on).
    pods: Mutex<Option<Arc<crate::kube::PodStore>>>,
}

impl Published {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn publish(&self, snapshot: Snapshot) {
        if let Ok(mut s) = self.snapshot.lock() {
            *s = Arc::new(snapshot);
        }
    }

    /// Every program attached and the exporters started.
    pub fn set_ready(&self, signals: Vec<SignalState>) {
        if let Ok(mut s) = self.signals.lock() {
            *s = signals;
        }
        self.ready.store(true, Ordering::Release);
    }

    pub fn set_pods(&self, pods: Arc<crate::kube::PodStore>) {
        if let Ok(mut p) = self.pods.lock() {
            *p = Some(pods);
        }
    }

    /// `/pods`' JSON; `None` with Kubernetes metadata off.
    pub fn pods_json(&self) -> Option<String> {
        self.pods.lock().ok()?.as_ref().map(|p| p.json())
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn latest(&self) -> Arc<Snapshot> {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn signals(&self) -> Vec<SignalState> {
        self.signals.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The exposition, as a scrape gets it.
    pub fn encode(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exposition(self.clone())));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// The same exposition in the Prometheus text format (0.0.4), for clients
/// that do not ask for OpenMetrics (`curl`, `promtool check metrics`): a
/// counter's family is named with its samples' `_total`, and there is no
/// `# EOF`.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[derive(Debug)]
struct Exposition(Arc<Published>);

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.latest();
        let mut w = Writer(&mut e);
        let version = std::iter::once(([("version", env!("CARGO_PKG_VERSION"))], 1));
        w.family("build_info", "the agent's version", false, version)?;
        w.gauge("ready", "1 once every program is attached and the exporters started", self.0.is_ready() as u64)?;
        let signals = self.0.signals();
        let states = signals.iter().map(|state| {
            (
                [
                    ("signal", state.signal.as_str()),
                    ("status", state.status.name()),
                    ("mechanism", state.detail.as_str()),
                ],
                1,
            )
        });
        w.family("signal_info", "each signal's state and the mechanism in use (or why there is none)", false, states)?;
        w.family(
            "records",
            "records that reached the pipeline, by kind",
            true,
            s.records.iter().map(|(k, n)| ([("kind", *k)], *n)),
        )?;
        w.family(
            "ring_lost",
            "records the kernel programs could not queue (ring buffer full), by signal",
            true,
            s.ring_lost.iter().map(|(signal, n)| ([("signal", *signal)], *n)),
        )?;
        w.counter("ring_reader_dropped", "record batches the ring-buffer reader could not hand on", s.reader_dropped)?;
        w.family(
            "program_misses",
            "runs of the agent's programs the kernel skipped (recursion_misses), by program",
            true,
            s.program_misses.iter().map(|(program, n)| ([("program", program.as_str())], *n)),
        )?;
        let ep = &s.episodes;
        w.gauge("episodes_open", "episodes open now", ep.open)?;
        w.counter("episodes_opened", "episodes opened", ep.opened)?;
        w.counter("episodes_closed", "episodes closed", ep.closed)?;
        w.counter(
            "episodes_late_records",
            "records older than an episode of their workload already handed out",
            ep.late,
        )?;
        w.counter("episodes_capped", "episodes not opened because too many were open", ep.capped)?;
        let x = &s.export;
        w.gauge("export_queue_depth", "closed episodes queued for export or being exported", x.queued)?;
        w.counter("episodes_exported", "episodes the exporter delivered", x.exported)?;
        w.counter("episodes_export_dropped", "episodes dropped (queue full, or still queued at stop)", x.dropped)?;
        w.counter("export_failures", "episodes given up on after every retry", x.failed)?;
        w.counter("export_retries", "exports tried again after a failure", x.retried)?;
        w.counter("events_file_dropped", "records the events file had no room for", s.events_file_dropped)?;
        let d = &s.disk;
        w.gauge("disk_used_bytes", "bytes the output directory's files take", d.used)?;
        w.gauge("disk_budget_bytes", "bytes they may take", d.budget)?;
        w.counter("disk_files_removed", "rotated files removed to stay within the budget", d.removed)?;
        w.gauge(
            "disk_writing_stopped",
            "1 while writing is stopped (disk full or read-only)",
            d.writing_stopped as u64,
        )?;
        w.counter("clock_steps", "wall-clock steps followed", s.clock_steps)?;
        w.counter("clock_slews", "wall-clock slews followed", s.clock_slews)?;
        for m in &s.sources {
            match m.counter {
                true => w.counter(m.name, m.help, m.value)?,
                false => w.gauge(m.name, m.help, m.value)?,
            }
        }
        w.workloads(&s.workloads)?;
        process(&mut w)
    }
}

/// Descriptors and samples, `observer_`-prefixed.
struct Writer<'a, 'b>(&'a mut DescriptorEncoder<'b>);

impl Writer<'_, '_> {
    fn counter(&mut self, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
        let name = format!("observer_{name}");
        ConstCounter::new(value).encode(self.0.encode_descriptor(&name, help, None, MetricType::Counter)?)
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
        let name = format!("observer_{name}");
        ConstGauge::new(value as i64).encode(self.0.encode_descriptor(&name, help, None, MetricType::Gauge)?)
    }

    /// One metric, one series per label set.
    fn family<L: prometheus_client::encoding::EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        counter: bool,
        series: impl Iterator<Item = (L, u64)>,
    ) -> Result<(), std::fmt::Error> {
        let name = format!("observer_{name}");
        let kind = if counter { MetricType::Counter } else { MetricType::Gauge };
        let mut m = self.0.encode_descriptor(&name, help, None, kind)?;
        for (labels, value) in series {
            let f = m.encode_family(&labels)?;
            match counter {
                true => ConstCounter::new(value).encode(f)?,
                false => ConstGauge::new(value as i64).encode(f)?,
            }
        }
        Ok(())
    }

    /// The observed signals per workload (`signals`).
    fn workloads(&mut self, all: &[(WorkloadLabels, SignalCounts)]) -> Result<(), std::fmt::Error> {
        type Pick = fn(&SignalCounts) -> u64;
        let simple: [(&str, &str, Pick); 5] = [
            ("tcp_resets_sent", "TCP resets sent by the workload's sockets or network namespace", |c| c.resets_sent),
            ("tcp_resets_received", "TCP resets received", |c| c.resets_received),
            ("tcp_retransmits", "TCP segments retransmitted", |c| c.retransmits),
            ("oom_kills", "processes of the workload the OOM killer chose", |c| c.oom_kills),
            ("memory_high_events", "times the workload's cgroup went over memory.high (memory.events high)", |c| {
                c.memory_high
            }),
        ];
        for (name, help, pick) in simple {
            let series = all.iter().filter(|(_, c)| pick(c) > 0).map(|(l, c)| (l.pairs(), pick(c)));
            self.family(name, help, true, series)?;
        }
        let gc = all.iter().filter(|(_, c)| c.gc_cycles > 0).map(|(l, c)| (l.pairs(), c.gc_cycles));
        self.family("go_gc_cycles", "Go GC cycles completed", true, gc)?;
        let drops = all.iter().flat_map(|(l, c)| {
            c.drops.iter().map(move |(reason, n)| {
                let [a, b, cc, d, e] = l.pairs();
                ([a, b, cc, d, e, ("reason", reason.as_str())], *n)
            })
        });
        self.family("net_drops", "packets dropped, by the kernel's drop reason", true, drops)?;
        let name = "observer_memory_throttled_seconds";
        let help = "time the workload's tasks spent throttled over memory.high";
        let mut m = self.0.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (l, c) in all.iter().filter(|(_, c)| c.throttled_ns > 0) {
            ConstCounter::new(c.throttled_ns as f64 / 1e9).encode(m.encode_family(&l.pairs())?)?;
        }
        Ok(())
    }
}

/// The agent process's own CPU time and memory (the usual `process_` names).
fn process(w: &mut Writer) -> Result<(), std::fmt::Error> {
    let Some((cpu_s, rss)) = self_usage() else { return Ok(()) };
    let m = w.0.encode_descriptor(
        "process_cpu_seconds",
        "the agent's user and system CPU time",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(cpu_s).encode(m)?;
    let m =
        w.0.encode_descriptor("process_resident_memory_bytes", "the agent's resident memory", None, MetricType::Gauge)?;
    ConstGauge::new(rss as i64).encode(m)
}

/// CPU seconds and resident bytes, from `/proc/self/stat` (bounded read).
fn self_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised comm, which may itself hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // utime, stime: fields 14, 15 (1-based, of the whole line); rss: 24.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let (hz, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    (hz > 0 && page > 0).then(|| (ticks / hz as f64, rss_pages * page as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family_and_ends_with_eof() {
        let p = Published::new();
        let mut labels = WorkloadLabels { service_name: "svc \"quoted\"\n".into(), ..WorkloadLabels::default() };
        labels.cgroup = "/a/b".into();
        let mut counts = SignalCounts { resets_sent: 3, throttled_ns: 1_500_000_000, ..SignalCounts::default() };
        counts.drops.insert("NO_SOCKET".into(), 9);
        p.publish(Snapshot {
            records: vec![("tcp.reset", 3)],
            program_misses: vec![("kfree_skb_btf".into(), 0), ("tcp_retransmit_skb_btf".into(), 2)],
            workloads: vec![(labels, counts)],
            ..Snapshot::default()
        });
        let text = p.encode();
        for needle in [
            "observer_ready 0",
            "observer_records_total{kind=\"tcp.reset\"} 3",
            "observer_program_misses_total{program=\"kfree_skb_btf\"} 0",
            "observer_program_misses_total{program=\"tcp_retransmit_skb_btf\"} 2",
            "observer_tcp_resets_sent_total{service_name=\"svc \\\"quoted\\\"\\n\",cgroup=\"/a/b\"",
            "reason=\"NO_SOCKET\"} 9",
            "observer_memory_throttled_seconds_total{",
            "} 1.5",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(!text.contains("observer_tcp_resets_received_total{"), "no series for a zero count:\n{text}");
    }

    #[test]
    fn prometheus_text_names_counter_families_by_their_samples() {
        let om = "# HELP a_x things\n# TYPE a_x counter\na_x_total 3\n# HELP g level\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP a_x_total things\n# TYPE a_x_total counter\na_x_total 3\n# HELP g level\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn ready_once_set() {
        let p = Published::new();
        assert!(!p.is_ready());
        p.set_ready(Vec::new());
        assert!(p.is_ready());
        assert!(p.encode().contains("observer_ready 1"));
    }

    #[test]
    fn own_usage_reads() {
        let (cpu, rss) = self_usage().expect("/proc/self/stat");
        assert!(cpu >= 0.0 && rss > 1 << 20, "{cpu} {rss}");
    }
}
