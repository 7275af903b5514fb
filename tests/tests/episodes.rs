//! Episodes on the host: the agent's traces, read where they land (its own
//! `traces.jsonl` when no endpoint is set, else a real OpenTelemetry
//! Collector's file exporter over gRPC or HTTP/protobuf, plain, TLS or
//! mutual TLS), each count against an independent truth:
//!
//! - a reset burst in a fresh network namespace is exactly one
//!   `tcp.reset.burst` trace for that namespace's workload, its sent count
//!   equal to the namespace's `nstat` `TcpOutRsts`;
//! - the Go fixture under a tight `GOMEMLIMIT` has `memory.pressure`
//!   episode(s) whose GC cycles (spans plus folded counts) are the gctrace
//!   cycles inside the episodes' windows, with gctrace's heap figures;
//! - faults: a collector that comes up late, one killed mid-run, an endpoint
//!   nobody answers (counted as failures, the agent keeps running), and bad
//!   `OTEL_*` values (exit 2 at start, one line naming the variable).
//!
//! The namespace's workload is named by the test: a process kept in it (and
//! the reset generator) run with `OTEL_SERVICE_NAME`, which the agent takes
//! as the workload's `service.name`. The agent sees the whole machine, so
//! only that workload's episodes are counted.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use observer_e2e::cgroup;
use observer_e2e::collector::{Collector, Receiver, free_port, require_otelcol};
use observer_e2e::episodes::{
    CGROUP_PATH, CLOSE_REASON, COUNT_GO_GC, COUNT_RESET_RECEIVED, COUNT_RESET_SENT, MEMORY_PRESSURE, NetnsHolder,
    TCP_RESET_BURST, closed_port, closed_port_burst, count_with_folded, episodes_of, episodes_of_pid,
    expect_export_counts, gctrace_starts, rss_kib, show, unique_service,
};
use observer_e2e::gofixture::{self, GoFixture, Toolchain, Variant};
use observer_e2e::netns::Netns;
use observer_e2e::nstat::nstat;
use observer_e2e::observer::Observer;
use observer_e2e::otlp::{Trace, traces};
use observer_e2e::require::require_root_and_bin;
use observer_e2e::resetgen::Report;
use observer_e2e::tls::TestPki;
use rstest::rstest;
use serde_json::Value;

/// Resets per burst.
const N: usize = 10;
/// `--episode-quiet`: an episode closes after this long without a signal.
const QUIET: &str = "1s";
const QUIET_FOR: Duration = Duration::from_secs(1);
/// From a burst's end to its trace in the file: the quiet period, the
/// reorder window, the export (and, after a fault, the exporter's retries).
const ARRIVE_WITHIN: Duration = Duration::from_secs(30);
/// Long enough after an arrival for a second, wrong episode of the same
/// workload to have closed and arrived as well.
const AFTER_ARRIVAL: Duration = Duration::from_secs(3);

fn resetgen() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_resetgen"))
}

fn agent_args() -> [&'static str; 2] {
    ["--episode-quiet", QUIET]
}

/// Where the agent's episodes go.
#[derive(Debug, Clone, Copy)]
enum Sink {
    /// No endpoint: the embedded default, `<output-dir>/traces.jsonl`.
    File,
    Collector(Receiver),
}

/// One named workload's namespace, with the kernel's count of resets it sent.
struct BurstNs {
    ns: Netns,
    holder: NetnsHolder,
}

impl BurstNs {
    fn new(tag: &str) -> BurstNs {
        let ns = Netns::create();
        let holder = NetnsHolder::start(&ns, &unique_service(tag));
        BurstNs { ns, holder }
    }

    fn service(&self) -> &str {
        &self.holder.service_name
    }

    /// A closed-port burst of N resets; returns the `TcpOutRsts` delta and
    /// the generator's report, both checked against N.
    fn burst(&self, port: u16) -> (u64, Report) {
        let before = nstat(&self.ns, "TcpOutRsts");
        let report = closed_port_burst(resetgen(), &self.ns, port, N, self.service());
        let sent = nstat(&self.ns, "TcpOutRsts") - before;
        assert_eq!(sent, N as u64, "TcpOutRsts delta in {} for {N} closed-port connections", self.ns.name());
        let errnos: Vec<_> = report.sockets.iter().map(|s| s.errno.as_deref().unwrap_or("none")).collect();
        assert_eq!(errnos, vec!["ECONNREFUSED"; N], "errors the generator's sockets saw");
        (sent, report)
    }
}

/// Polls `read` until `service`'s `kind` episodes number at least `at_least`.
fn wait_for_episodes(read: impl Fn() -> Vec<Value>, kind: &str, service: &str, at_least: usize) -> Vec<Trace> {
    let deadline = std::time::Instant::now() + ARRIVE_WITHIN;
    loop {
        let found = episodes_of(&read(), kind, service);
        if found.len() >= at_least || std::time::Instant::now() >= deadline {
            return found;
        }
        sleep(Duration::from_millis(200));
    }
}

/// The checks every reset-burst episode passes: the root's counts are the
/// kernel's and the generator's, each reset is a child (or folded), the
/// episode closed because it went quiet, and it names its workload.
fn assert_burst_episode(trace: &Trace, sent_truth: u64, received_truth: u64) {
    let root = trace.root();
    let a = &root.attributes;
    let shown = trace.summary();
    assert_eq!(a.u64(COUNT_RESET_SENT), Some(sent_truth), "{COUNT_RESET_SENT} vs nstat TcpOutRsts; {shown}");
    assert_eq!(
        a.u64(COUNT_RESET_RECEIVED),
        Some(received_truth),
        "{COUNT_RESET_RECEIVED} vs ECONNREFUSED sockets; {shown}"
    );
    let children = count_with_folded(trace, "tcp.reset");
    assert_eq!(children, sent_truth + received_truth, "tcp.reset children (spans + folded) vs the counts; {shown}");
    assert_eq!(a.str(CLOSE_REASON), Some("quiet"), "{CLOSE_REASON}; {shown}");
    assert!(root.end_unix_nano >= root.start_unix_nano, "root ends before it starts; {shown}");
    for span in trace.spans.iter().filter(|s| !s.is_root()) {
        assert_eq!(span.parent_span_id, root.span_id, "children hang off the root; {span:?}");
        assert!(
            span.start_unix_nano >= root.start_unix_nano && span.end_unix_nano <= root.end_unix_nano,
            "child {} [{}, {}] outside the root [{}, {}]",
            span.name,
            span.start_unix_nano,
            span.end_unix_nano,
            root.start_unix_nano,
            root.end_unix_nano
        );
    }
}

/// A reset burst in a fresh namespace: exactly one `tcp.reset.burst` trace
/// for its workload, with the kernel's counts, through each sink.
#[rstest]
#[case::file(Sink::File)]
#[case::grpc(Sink::Collector(Receiver::GRPC))]
#[case::http_protobuf(Sink::Collector(Receiver::HTTP))]
#[case::grpc_tls(Sink::Collector(Receiver::GRPC_TLS))]
#[case::http_tls(Sink::Collector(Receiver::HTTP_TLS))]
#[case::grpc_mtls(Sink::Collector(Receiver::GRPC_MTLS))]
#[case::http_mtls(Sink::Collector(Receiver::HTTP_MTLS))]
fn reset_burst_is_one_trace(#[case] sink: Sink) {
    let Some(bin) = require_root_and_bin() else { return };
    let collector = match sink {
        Sink::File => None,
        Sink::Collector(receiver) => {
            if require_otelcol().is_none() {
                return;
            }
            Some(Collector::start(receiver))
        }
    };
    let env = collector.as_ref().map(Collector::otlp_env).unwrap_or_default();
    let burst = BurstNs::new("burst");
    let observer = Observer::start_env(&bin, &agent_args(), &env);
    let (sent, report) = burst.burst(closed_port(0));

    let read = || match &collector {
        Some(c) => c.traces(),
        None => observer.traces(),
    };
    let arrived = wait_for_episodes(read, TCP_RESET_BURST, burst.service(), 1);
    assert!(
        !arrived.is_empty(),
        "no {TCP_RESET_BURST} episode of {} within {ARRIVE_WITHIN:?}; collector stderr:\n{}",
        burst.service(),
        collector.as_ref().map(Collector::stderr).unwrap_or_default()
    );
    sleep(AFTER_ARRIVAL);
    let stopped = observer.stop();

    let requests = match &collector {
        Some(c) => c.traces(),
        None => stopped.traces.clone(),
    };
    let ours = episodes_of(&requests, TCP_RESET_BURST, burst.service());
    assert_eq!(ours.len(), 1, "{TCP_RESET_BURST} traces of {} ({sink:?}):\n{}", burst.service(), show(&ours));
    assert_burst_episode(&ours[0], sent, report.sockets.len() as u64);

    let counts = expect_export_counts(&stopped.summary);
    if collector.is_some() {
        // The agent's own file holds the same episode, under the same id.
        let own = episodes_of(&stopped.traces, TCP_RESET_BURST, burst.service());
        let ids: Vec<&str> = own.iter().map(|t| t.trace_id.as_str()).collect();
        assert_eq!(ids, vec![ours[0].trace_id.as_str()], "trace ids in traces.jsonl vs the collector's file");
        assert!(counts.exported >= 1, "exported= after a delivered episode: {}", stopped.summary);
    }
    assert_eq!((counts.dropped, counts.failed), (0, 0), "dropped=/failed= with a healthy sink: {}", stopped.summary);
}

fn gofixture_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("gofixtures")
}

/// The fixture's live heap near the limit: the heap goal is capped by
/// `GOMEMLIMIT` from the first cycles on, and it collects every few MiB.
const PRESSURE_WORK: &[&str] = &["-wait-stdin", "-live-mb", "32", "-allocs", "20000", "-alloc-size", "65536"];
const TIGHT_LIMIT: &str = "40MiB";
/// How far from an episode's edge a gctrace cycle's start may be misplaced:
/// gctrace prints ms, the mapping to the wall clock is estimated from the
/// spans, and an episode may open at a cycle's end rather than its start.
const EDGE: u64 = 20_000_000;

/// The Go fixture under a tight `GOMEMLIMIT`: its `memory.pressure`
/// episodes hold exactly the gctrace cycles that fall inside them, each
/// cycle span with gctrace's heap figures.
#[test]
fn go_memory_pressure_episodes_hold_the_gctrace_cycles() {
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = gofixture::build(&gofixture_cache(), Toolchain::Release("go1.27.4"), Variant::Plain);
    let mut observer = Observer::start_with(&bin, &agent_args());
    let mut fixture = GoFixture::start(
        &fixture_bin,
        PRESSURE_WORK,
        &[("GODEBUG", "gctrace=1"), ("GOMEMLIMIT", TIGHT_LIMIT), ("GOGC", "100")],
    );
    let pid = fixture.pid;
    let cgroup_path = cgroup::path_of_pid(pid);
    observer.wait_for_stderr(&format!("observer: go: attached pid={pid} "), Duration::from_secs(10));
    fixture.go();
    let finished = fixture.finish(Duration::from_secs(120));
    let deadline = std::time::Instant::now() + ARRIVE_WITHIN;
    while episodes_of_pid(&observer.traces(), MEMORY_PRESSURE, pid).is_empty() && std::time::Instant::now() < deadline {
        sleep(Duration::from_millis(200));
    }
    sleep(AFTER_ARRIVAL);
    let stopped = observer.stop();
    let stderr = &finished.stderr;

    let episodes = episodes_of_pid(&stopped.traces, MEMORY_PRESSURE, pid);
    assert!(
        !episodes.is_empty(),
        "no {MEMORY_PRESSURE} episode of pid {pid}; all traces:\n{}",
        show(&traces(&stopped.traces))
    );
    let trace = gofixture::gctrace(stderr);
    let starts = gctrace_starts(stderr);
    assert!(
        !trace.is_empty() && trace.len() == starts.len(),
        "gctrace lines: {} parsed, {} timed",
        trace.len(),
        starts.len()
    );

    // Each episode: the workload is the fixture process; its root's GC
    // count is its spans plus what was folded.
    let mut spans = Vec::new();
    let mut total = 0;
    for ep in &episodes {
        let shown = ep.summary();
        assert_eq!(ep.resource.str("process.runtime.name"), Some("go"), "{shown}");
        assert!(
            ep.resource.str("process.executable.name").is_some_and(|n| n.starts_with("gofixture")),
            "process.executable.name; {shown}"
        );
        assert_eq!(ep.root().attributes.str(CGROUP_PATH), Some(cgroup_path.as_str()), "{CGROUP_PATH}; {shown}");
        // What it was started with, from its environment (read at attach).
        let env = |k: &str| ep.root().attributes.str(&format!("observer.go.env.{k}")).map(str::to_string);
        assert_eq!(env("environ").as_deref(), Some("read"), "observer.go.env.environ; {shown}");
        assert_eq!(env("gomemlimit").as_deref(), Some(TIGHT_LIMIT), "observer.go.env.gomemlimit; {shown}");
        assert_eq!(env("gogc").as_deref(), Some("100"), "observer.go.env.gogc; {shown}");
        let in_trace = count_with_folded(ep, "go.gc");
        assert_eq!(
            ep.root().attributes.u64(COUNT_GO_GC),
            Some(in_trace),
            "{COUNT_GO_GC} vs go.gc spans + folded; {shown}"
        );
        total += in_trace;
        spans.extend(ep.spans_named("go.gc").cloned());
    }
    assert!(!spans.is_empty(), "no go.gc span in the episodes:\n{}", show(&episodes));

    // Every cycle span is a gctrace cycle, once, with its heap figures
    // (gctrace prints MiB truncated: `>> 20`).
    let cycle_of = |s: &observer_e2e::otlp::Span| {
        s.attributes.u64("observer.go.gc.cycle").unwrap_or_else(|| panic!("go.gc span without a cycle: {s:?}")) as u32
    };
    let mut seen = std::collections::BTreeSet::new();
    for s in &spans {
        let c = cycle_of(s);
        assert!(seen.insert(c), "cycle {c} twice in the episodes");
        let t = trace.iter().find(|t| t.cycle == c).unwrap_or_else(|| panic!("cycle {c} not in gctrace:\n{stderr}"));
        let mib = |k: &str| s.attributes.expect_u64(&format!("observer.go.gc.{k}")) >> 20;
        let heap = [mib("heap_start_bytes"), mib("heap_end_bytes"), mib("heap_marked_bytes")];
        assert_eq!(heap, t.heap_mib, "cycle {c}: heap A->B->C MiB vs gctrace; span {:?}", s.attributes);
        assert_eq!(mib("heap_goal_bytes"), t.goal_mib, "cycle {c}: goal MiB vs gctrace; span {:?}", s.attributes);
    }

    // gctrace's `@S.SSSs` is since the process started: its offset to the
    // wall clock, from the cycles that are spans (the median).
    let mut offsets: Vec<i128> = spans
        .iter()
        .filter_map(|s| {
            let at = starts.iter().find(|(c, _)| *c == cycle_of(s))?.1;
            Some(i128::from(s.start_unix_nano) - (at * 1e9) as i128)
        })
        .collect();
    offsets.sort();
    let offset = offsets[offsets.len() / 2];
    let windows: Vec<(u64, u64)> =
        episodes.iter().map(|e| (e.root().start_unix_nano, e.root().end_unix_nano)).collect();
    let wall = |at: f64| (offset + (at * 1e9) as i128) as u64;
    let inside = |t: u64, margin: i128| {
        windows.iter().any(|&(s, e)| i128::from(t) >= i128::from(s) + margin && i128::from(t) <= i128::from(e) - margin)
    };
    let surely_in = starts.iter().filter(|(_, at)| inside(wall(*at), i128::from(EDGE))).count() as u64;
    let maybe_in = starts.iter().filter(|(_, at)| inside(wall(*at), -i128::from(EDGE))).count() as u64;
    assert!(
        surely_in <= total && total <= maybe_in,
        "GC cycles in the episodes (spans + folded) = {total}; gctrace cycles inside the windows: {surely_in} \
         (±{} ms: {maybe_in}), of {} in all; windows {windows:?}",
        EDGE / 1_000_000,
        starts.len()
    );
}

/// The collector is not there when the agent starts, and comes up later:
/// the episodes after that arrive; the one before arrives from the queue or
/// is counted as dropped.
#[rstest]
#[case::grpc(Receiver::GRPC)]
#[case::http_protobuf(Receiver::HTTP)]
fn collector_started_late(#[case] receiver: Receiver) {
    let Some(bin) = require_root_and_bin() else { return };
    if require_otelcol().is_none() {
        return;
    }
    let mut collector = Collector::configured(receiver);
    let (early, late) = (BurstNs::new("early"), BurstNs::new("late"));
    let observer = Observer::start_env(&bin, &agent_args(), &collector.otlp_env());
    let (early_sent, early_report) = early.burst(closed_port(0));
    // Closed and handed to the exporter while nothing listens.
    let own = wait_for_episodes(|| observer.traces(), TCP_RESET_BURST, early.service(), 1);
    assert_eq!(own.len(), 1, "the early episode in traces.jsonl:\n{}", show(&own));
    sleep(AFTER_ARRIVAL);
    collector.restart();
    let (late_sent, late_report) = late.burst(closed_port(1));
    let late_in = wait_for_episodes(|| collector.traces(), TCP_RESET_BURST, late.service(), 1);
    assert_eq!(late_in.len(), 1, "the late episode in the collector; collector stderr:\n{}", collector.stderr());
    sleep(AFTER_ARRIVAL);
    let stopped = observer.stop();
    let requests = collector.traces();
    let late_in = episodes_of(&requests, TCP_RESET_BURST, late.service());
    assert_eq!(late_in.len(), 1, "late episodes in the collector:\n{}", show(&late_in));
    assert_burst_episode(&late_in[0], late_sent, late_report.sockets.len() as u64);
    let early_in = episodes_of(&requests, TCP_RESET_BURST, early.service());
    let counts = expect_export_counts(&stopped.summary);
    match early_in.as_slice() {
        [] => assert!(
            counts.dropped >= 1,
            "the early episode neither arrived nor was counted dropped: {}",
            stopped.summary
        ),
        [one] => assert_burst_episode(one, early_sent, early_report.sockets.len() as u64),
        more => panic!("the early episode arrived {} times:\n{}", more.len(), show(more)),
    }
    let ours = early_in.len() + late_in.len();
    assert!(counts.exported >= ours as u64, "exported= vs our {ours} delivered episodes: {}", stopped.summary);
}

/// The collector dies mid-run: the agent keeps running, its memory stays
/// bounded, and its stop line counts the failures; what came before the
/// kill was delivered, and its own file has both episodes.
#[rstest]
#[case::grpc(Receiver::GRPC)]
#[case::http_protobuf(Receiver::HTTP)]
fn collector_killed_mid_run(#[case] receiver: Receiver) {
    let Some(bin) = require_root_and_bin() else { return };
    if require_otelcol().is_none() {
        return;
    }
    let mut collector = Collector::start(receiver);
    let (before, after) = (BurstNs::new("before-kill"), BurstNs::new("after-kill"));
    let mut observer = Observer::start_env(&bin, &agent_args(), &collector.otlp_env());
    let (sent, report) = before.burst(closed_port(0));
    let delivered = wait_for_episodes(|| collector.traces(), TCP_RESET_BURST, before.service(), 1);
    assert_eq!(delivered.len(), 1, "episode before the kill; collector stderr:\n{}", collector.stderr());
    let rss_before = rss_kib(observer.pid()).expect("agent's VmRSS");
    collector.kill();

    after.burst(closed_port(1));
    let own = wait_for_episodes(|| observer.traces(), TCP_RESET_BURST, after.service(), 1);
    assert_eq!(own.len(), 1, "the episode after the kill in traces.jsonl:\n{}", show(&own));
    // The exporter's attempts (and retries) fail meanwhile.
    sleep(QUIET_FOR * 5);
    assert!(
        observer.is_running(),
        "the agent exited after its collector died; stderr:\n{}",
        observer.stderr_seen().join("\n")
    );
    let rss_after = rss_kib(observer.pid()).expect("agent's VmRSS");
    assert!(
        rss_after <= rss_before + 64 * 1024,
        "agent VmRSS grew from {rss_before} KiB to {rss_after} KiB with its collector gone"
    );
    let stopped = observer.stop();
    let counts = expect_export_counts(&stopped.summary);
    assert!(counts.failed + counts.dropped >= 1, "failed=/dropped= after the collector died: {}", stopped.summary);
    assert!(counts.exported >= 1, "exported= before the kill: {}", stopped.summary);
    let requests = collector.traces();
    let before_in = episodes_of(&requests, TCP_RESET_BURST, before.service());
    assert_eq!(before_in.len(), 1, "{}", show(&before_in));
    assert_burst_episode(&before_in[0], sent, report.sockets.len() as u64);
    let after_in = episodes_of(&requests, TCP_RESET_BURST, after.service());
    assert!(after_in.is_empty(), "an episode reached a dead collector:\n{}", show(&after_in));
    assert_eq!(episodes_of(&stopped.traces, TCP_RESET_BURST, after.service()).len(), 1, "traces.jsonl after the kill");
}

/// An endpoint nobody answers is not an error at start (OTLP exporters
/// connect lazily): the agent runs, writes its file, and counts failures.
#[rstest]
#[case::refused_grpc("grpc", false)]
#[case::refused_http("http/protobuf", false)]
#[case::unroutable_grpc("grpc", true)]
fn unreachable_endpoint_counts_failures(#[case] protocol: &str, #[case] unroutable: bool) {
    let Some(bin) = require_root_and_bin() else { return };
    // 192.0.2.0/24 is TEST-NET-1: never routed, so connecting times out.
    let endpoint =
        if unroutable { "http://192.0.2.1:4317".to_string() } else { format!("http://127.0.0.1:{}", free_port()) };
    let env: Vec<(String, OsString)> = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone().into()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT".into(), "1000".into()),
    ];
    let burst = BurstNs::new("unreachable");
    let mut observer = Observer::start_env(&bin, &agent_args(), &env);
    let (sent, report) = burst.burst(closed_port(0));
    let own = wait_for_episodes(|| observer.traces(), TCP_RESET_BURST, burst.service(), 1);
    assert_eq!(own.len(), 1, "the episode in traces.jsonl with {endpoint} unreachable:\n{}", show(&own));
    assert_burst_episode(&own[0], sent, report.sockets.len() as u64);
    sleep(QUIET_FOR * 4);
    assert!(observer.is_running(), "the agent exited with {endpoint} unreachable");
    let stopped = observer.stop();
    let counts = expect_export_counts(&stopped.summary);
    assert_eq!(counts.exported, 0, "exported= to {endpoint}: {}", stopped.summary);
    assert!(counts.failed + counts.dropped >= 1, "failed=/dropped= with {endpoint} unreachable: {}", stopped.summary);
}

/// What a bad value is made of: the variable, its value, and the other
/// variables that make it matter (a TLS file needs an https endpoint).
#[derive(Debug, Clone, Copy)]
enum Bad {
    Value(&'static str, &'static str),
    /// `var` points at a file that does not exist, with TLS otherwise valid.
    MissingTlsFile(&'static str),
    /// `var` points at a file that is not PEM.
    GarbageTlsFile(&'static str),
}

#[rstest]
#[case::protocol(Bad::Value("OTEL_EXPORTER_OTLP_PROTOCOL", "bogus"))]
#[case::traces_protocol(Bad::Value("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "bogus"))]
#[case::timeout(Bad::Value("OTEL_EXPORTER_OTLP_TIMEOUT", "abc"))]
#[case::compression(Bad::Value("OTEL_EXPORTER_OTLP_COMPRESSION", "zip"))]
#[case::endpoint(Bad::Value("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url"))]
#[case::missing_ca(Bad::MissingTlsFile("OTEL_EXPORTER_OTLP_CERTIFICATE"))]
#[case::missing_client_key(Bad::MissingTlsFile("OTEL_EXPORTER_OTLP_CLIENT_KEY"))]
#[case::missing_client_cert(Bad::MissingTlsFile("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"))]
#[case::garbage_ca(Bad::GarbageTlsFile("OTEL_EXPORTER_OTLP_CERTIFICATE"))]
#[case::garbage_client_key(Bad::GarbageTlsFile("OTEL_EXPORTER_OTLP_CLIENT_KEY"))]
fn bad_otel_value_exits_2_naming_the_variable(#[case] bad: Bad) {
    let Some(bin) = require_root_and_bin() else { return };
    let pki = TestPki::create();
    let garbage = pki.dir().join("garbage.pem");
    std::fs::write(&garbage, "this is not a PEM file\n").unwrap();
    let missing = pki.dir().join("does-not-exist.pem");
    let tls = |var: &str, file: &Path| -> Vec<(String, OsString)> {
        let mut env: Vec<(String, OsString)> = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), "https://localhost:4317".into()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE".into(), pki.ca_cert().into()),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY".into(), pki.client_key().into()),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE".into(), pki.client_cert().into()),
        ];
        env.iter_mut().filter(|(k, _)| k == var).for_each(|(_, v)| *v = file.into());
        env
    };
    let (var, env) = match bad {
        Bad::Value(var, value) => (var, vec![(var.to_string(), OsString::from(value))]),
        Bad::MissingTlsFile(var) => (var, tls(var, &missing)),
        Bad::GarbageTlsFile(var) => (var, tls(var, &garbage)),
    };
    let out_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&bin);
    cmd.arg("run").arg("--output-dir").arg(out_dir.path()).args(["--quiet", "--duration", "30s"]);
    // Only this test's OTEL_* variables, none inherited.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let started = std::time::Instant::now();
    let out = observer_e2e::command::output_within(&mut cmd, Duration::from_secs(60));
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{bad:?}: {} after {took:?}; stderr:\n{err}", out.status);
    let naming: Vec<&str> = err.lines().filter(|l| names(l, var)).collect();
    assert_eq!(naming.len(), 1, "{bad:?}: want one line naming {var}; stderr:\n{err}");
    assert!(!err.contains("observer: ready"), "{bad:?}: attached despite the bad value; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{bad:?}: a panic; stderr:\n{err}");
    assert!(took < Duration::from_secs(20), "{bad:?}: took {took:?} to refuse; stderr:\n{err}");
}

/// `line` has `var` as a whole word (not a prefix of a longer name).
fn names(line: &str, var: &str) -> bool {
    line.match_indices(var).any(|(i, _)| {
        let next = line[i + var.len()..].chars().next();
        let prev = line[..i].chars().next_back();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && !prev.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[test]
fn names_matches_whole_variable_names() {
    assert!(names("error: OTEL_EXPORTER_OTLP_PROTOCOL=bogus: want grpc", "OTEL_EXPORTER_OTLP_PROTOCOL"));
    assert!(!names("error: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=bogus", "OTEL_EXPORTER_OTLP_PROTOCOL"));
    assert!(!names("OTEL_EXPORTER_OTLP_CERTIFICATE_X", "OTEL_EXPORTER_OTLP_CERTIFICATE"));
}
