//! `cargo xtask bench export`: episodes from the agent to an OpenTelemetry
//! Collector's file, under many workloads at once.
//!
//! Set-up: `--namespaces` network namespaces (loopback up), created before
//! the agent starts; the tests' collector (`OBSERVER_OTELCOL`, else the one
//! `cargo xtask setup` caches) on loopback with an OTLP gRPC receiver and a
//! file exporter (OTLP JSON, one request per line) into a scratch file.
//!
//! The workload, the same in every run: `--rounds` rounds, one every
//! `--round-interval-ms`; in each, one thread of this process enters every
//! namespace in turn (`setns`) and connects `--burst` times to a closed
//! port of its loopback: each connect one RST sent (by the kernel) and one
//! received. A namespace with no process of its own is its own workload,
//! so each namespace yields one `tcp.reset.burst` episode per round (the
//! rounds lie further apart than the agent's quiet period).
//!
//! Runs alternate "nothing attached" and "agent attached", `--repeat` each.
//! Nothing attached: the generating thread's CPU time is the baseline.
//! Attached (`observer run --output-dir TMP --quiet --episode-quiet Q`,
//! exporting over gRPC to the collector): the collector's file is read every
//! ~10 ms and each new trace's root span noted with the wall time it was
//! first seen; latency = that time − the episode's close, which is the root
//! span's end (its last signal) + the quiet period, as the engine closes it
//! (its reorder window lies inside that latency). Also spans per
//! second arriving, episodes exported vs expected (namespaces × rounds), the
//! agent's CPU time (user + system, `/proc`) and peak RSS (`VmHWM`).
//!
//! Every namespace is removed at the end, whatever fails. Asserts nothing.

use std::{
    collections::{BTreeMap, HashMap},
    env, fs,
    io::{ErrorKind, Read as _, Seek as _, SeekFrom},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::Receiver,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use nix::{
    sched::{CloneFlags, setns},
    sys::signal::Signal,
    time::{ClockId, clock_gettime},
};
use serde_json::{Value, json};

use super::{
    ExportArgs, child, interrupt,
    observer::{Observer, cpu_time},
    report,
};
use crate::{collector, host};

/// The root span's name of a reset episode.
const EPISODE: &str = "tcp.reset.burst";
/// How often the collector's file is read.
const POLL: Duration = Duration::from_millis(10);
/// How often the agent's RSS is sampled (its `VmHWM` is the peak anyway).
const SAMPLE: Duration = Duration::from_millis(100);
/// The collector's receiver must accept connections within this.
const COLLECTOR_READY_WITHIN: Duration = Duration::from_secs(60);
/// After the last burst and the quiet period: how long to wait for the rest.
const DRAIN_WITHIN: Duration = Duration::from_secs(30);
/// Once every expected episode is in: how long to look for more (extras, late spans).
const SETTLE: Duration = Duration::from_millis(1500);
/// The agent's reorder window (`correlate::Rules::default().reorder_window`,
/// not a flag): an episode is processed at its close only once its records
/// are that old.
const REORDER_WINDOW: Duration = Duration::from_secs(2);
/// The closed port connected to in each namespace.
const CLOSED_PORT: u16 = 9;
/// Names of this bench's namespaces: `obs-bx-<pid>-<i>`.
const NS_PREFIX: &str = "obs-bx";

pub fn run(args: &ExportArgs) -> Result<ExitCode> {
    if !host::is_root()? {
        bail!("bench export needs root (network namespaces, eBPF): run it with sudo");
    }
    if args.namespaces == 0 || args.rounds == 0 || args.burst == 0 || args.repeat == 0 || args.quiet_ms == 0 {
        bail!("--namespaces, --rounds, --burst, --repeat and --quiet-ms must be at least 1");
    }
    let quiet = Duration::from_millis(args.quiet_ms);
    let interval = Duration::from_millis(args.round_interval_ms);
    if interval < quiet * 2 {
        bail!("--round-interval-ms must be at least twice --quiet-ms, or a namespace's rounds merge into one episode");
    }
    // Before any thread exists (set_var is unsound with others running): the
    // agent, started later, inherits these; nothing of the caller's OTEL_*
    // (a disabled SDK, another endpoint) reaches it.
    let port = free_port()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    for (key, _) in env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("OTEL_")) {
            // SAFETY: single-threaded still (see above).
            unsafe { env::remove_var(&key) };
        }
    }
    // SAFETY: single-threaded still (see above).
    unsafe {
        env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
        env::set_var("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    }

    let bin = super::agent_bin(args.observer.as_deref())?;
    let otelcol = collector_bin(args.collector.as_deref())?;
    interrupt::install()?;
    let scratch = Scratch::new()?;
    eprintln!(
        "==> bench export: {} namespaces, {} rounds of {} connects each (one every {} ms), quiet {} ms, {} runs each way",
        args.namespaces, args.rounds, args.burst, args.round_interval_ms, args.quiet_ms, args.repeat
    );
    let started = Instant::now();
    let namespaces = Namespaces::create(args.namespaces)?;
    eprintln!("    {} namespaces created in {:.1}s", namespaces.len(), started.elapsed().as_secs_f64());
    let workload = Workload { burst: args.burst, rounds: args.rounds, interval };
    let setup = Setup { agent: &bin, collector: &otelcol, port, quiet, keep_file: args.keep_file.as_deref() };

    // One unrecorded pass first, so that the first recorded run is not the cold one.
    generate(&namespaces, &Workload { rounds: 1, ..workload }, None)?;
    let mut baseline = Vec::new();
    let mut attached = Vec::new();
    for round in 0..args.repeat {
        for with_agent in if round % 2 == 0 { [false, true] } else { [true, false] } {
            interrupt::check()?;
            if with_agent {
                let dir = scratch.0.join(format!("run-{round}"));
                let run = attached_run(&setup, &dir, &namespaces, &workload)?;
                fs::remove_dir_all(&dir).ok();
                eprintln!("    run {round} observer: {}", run.progress(&workload, namespaces.len()));
                attached.push(run);
            } else {
                let g = generate(&namespaces, &workload, None)?;
                eprintln!("    run {round} baseline: {}", g.progress());
                baseline.push(g);
            }
        }
    }

    let results = summarize(args, &namespaces, &workload, &baseline, &attached)?;
    print_figures(&results);
    report::write_atomically(&args.output, &(serde_json::to_string_pretty(&results)? + "\n"))?;
    eprintln!("==> wrote {}", args.output.display());
    drop(namespaces);
    Ok(ExitCode::SUCCESS)
}

/// `OBSERVER_OTELCOL` when set, else the cached build (built now if missing).
fn collector_bin(given: Option<&Path>) -> Result<PathBuf> {
    let bin = match (given, env::var_os("OBSERVER_OTELCOL").filter(|v| !v.is_empty())) {
        (Some(bin), _) => bin.to_path_buf(),
        (None, Some(bin)) => PathBuf::from(bin),
        (None, None) => {
            eprintln!("==> collector: {}", collector::ensure()?);
            collector::bin()
        }
    };
    if !bin.is_file() {
        bail!("{} is not a file (the collector: `cargo xtask setup` builds it)", bin.display());
    }
    Ok(bin)
}

/// A loopback port nothing listens on now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a loopback port")?;
    Ok(listener.local_addr()?.port())
}

// ---------------------------------------------------------------------------
// Network namespaces

/// The bench's namespaces, each with `lo` up; all deleted on drop.
struct Namespaces {
    list: Vec<Ns>,
}

struct Ns {
    name: String,
    inode: u64,
    file: fs::File,
}

impl Namespaces {
    fn create(count: usize) -> Result<Self> {
        let mut set = Self { list: Vec::with_capacity(count) };
        let pid = std::process::id();
        for i in 0..count {
            interrupt::check()?;
            let name = format!("{NS_PREFIX}-{pid}-{i}");
            ip(&["netns", "add", &name])?;
            // Opened at once, so that Drop deletes it whatever fails next.
            let path = format!("/run/netns/{name}");
            let file = match fs::File::open(&path) {
                Ok(file) => file,
                Err(err) => {
                    ip(&["netns", "delete", &name]).ok();
                    return Err(err).with_context(|| format!("opening {path}"));
                }
            };
            let inode = file.metadata().with_context(|| format!("stat {path}"))?.ino();
            set.list.push(Ns { name: name.clone(), inode, file });
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
        }
        Ok(set)
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    /// Namespace inode → its index.
    fn by_inode(&self) -> HashMap<u64, usize> {
        self.list.iter().enumerate().map(|(i, ns)| (ns.inode, i)).collect()
    }

    /// Namespace name → its index.
    fn by_name(&self) -> HashMap<String, usize> {
        self.list.iter().enumerate().map(|(i, ns)| (ns.name.clone(), i)).collect()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let mut failed = 0;
        for ns in self.list.drain(..) {
            drop(ns.file);
            if let Err(err) = ip(&["netns", "delete", &ns.name]) {
                failed += 1;
                eprintln!("warning: {err:#}");
            }
        }
        if failed > 0 {
            eprintln!("warning: {failed} namespaces {NS_PREFIX}-{}-* left", std::process::id());
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!("`ip {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The workload

#[derive(Clone, Copy)]
struct Workload {
    /// Connects per namespace per round.
    burst: u64,
    rounds: usize,
    /// From the start of one round to the start of the next.
    interval: Duration,
}

/// What one pass of the workload did.
#[derive(Clone)]
struct Generated {
    connects: u64,
    refused: u64,
    /// The generating thread's CPU time over all rounds: each connect's
    /// kernel work and its RSTs (loopback softirq included) run in it.
    cpu: Duration,
    /// Wall time of each round's pass over every namespace.
    rounds_s: Vec<f64>,
    /// Unix time (ns) of each round's last connect.
    round_end_unix_ns: Vec<u64>,
}

impl Generated {
    fn progress(&self) -> String {
        format!(
            "{} connects ({} refused), generator CPU {:.3}s, {:.3}s per round",
            self.connects,
            self.refused,
            self.cpu.as_secs_f64(),
            report::median_of(self.rounds_s.clone())
        )
    }

    fn to_json(&self, run: usize) -> Value {
        json!({
            "run": run,
            "connects": self.connects,
            "refused": self.refused,
            "generator_cpu_s": self.cpu.as_secs_f64(),
            "round_wall_s": self.rounds_s,
        })
    }
}

/// Runs the workload on one thread of this process; `done` is set when it
/// ends (either way).
fn generate(namespaces: &Namespaces, workload: &Workload, done: Option<&AtomicBool>) -> Result<Generated> {
    struct SetOnDrop<'a>(Option<&'a AtomicBool>);
    impl Drop for SetOnDrop<'_> {
        fn drop(&mut self) {
            if let Some(flag) = self.0 {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }
    let _done = SetOnDrop(done);
    thread::scope(|s| {
        s.spawn(|| -> Result<Generated> {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, CLOSED_PORT));
            let mut g = Generated {
                connects: 0,
                refused: 0,
                cpu: Duration::ZERO,
                rounds_s: Vec::new(),
                round_end_unix_ns: Vec::new(),
            };
            let cpu0 = thread_cpu()?;
            let start = Instant::now();
            for round in 0..workload.rounds {
                let due = start + workload.interval * u32::try_from(round)?;
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                interrupt::check()?;
                let t0 = Instant::now();
                for ns in &namespaces.list {
                    setns(ns.file.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {}", ns.name))?;
                    for _ in 0..workload.burst {
                        g.connects += 1;
                        match TcpStream::connect(addr) {
                            Err(err) if err.kind() == ErrorKind::ConnectionRefused => g.refused += 1,
                            Ok(_) => bail!("{addr} in {} accepted a connection: something listens there", ns.name),
                            Err(err) => bail!("connect {addr} in {}: {err}", ns.name),
                        }
                    }
                }
                g.rounds_s.push(t0.elapsed().as_secs_f64());
                g.round_end_unix_ns.push(unix_ns());
            }
            g.cpu = thread_cpu()?.saturating_sub(cpu0);
            Ok(g)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?
    })
}

fn thread_cpu() -> Result<Duration> {
    Ok(Duration::from(clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).context("CLOCK_THREAD_CPUTIME_ID")?))
}

fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

// ---------------------------------------------------------------------------
// The collector

/// The collector, started on loopback, killed (by pid) on drop.
struct Collector {
    proc: Child,
    stderr: Receiver<String>,
    said: Vec<String>,
}

impl Collector {
    fn start(bin: &Path, dir: &Path, port: u16, file: &Path) -> Result<Self> {
        let config = dir.join("otelcol.yaml");
        fs::write(&config, collector_config(port, file)).with_context(|| format!("writing {}", config.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&config).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        for (key, _) in env::vars_os() {
            if key.to_str().is_some_and(|k| k.starts_with("OTEL_")) {
                cmd.env_remove(key);
            }
        }
        let mut proc = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let Some(stderr) = proc.stderr.take() else {
            child::kill_and_reap(&mut proc);
            bail!("no stderr pipe from {cmd:?}");
        };
        let mut collector = Self { proc, stderr: child::lines(stderr), said: Vec::new() };
        let deadline = Instant::now() + COLLECTOR_READY_WITHIN;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            collector.drain();
            if let Some(status) = collector.proc.try_wait()? {
                bail!("the collector exited at start ({status}); it said:\n{}", collector.said.join("\n"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(collector);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the collector did not listen on {addr} within {COLLECTOR_READY_WITHIN:?}; it said:\n{}",
                    collector.said.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Keeps the collector's stderr lines (the last 200).
    fn drain(&mut self) {
        self.said.extend(self.stderr.try_iter());
        let n = self.said.len();
        if n > 200 {
            self.said.drain(..n - 200);
        }
    }

    /// SIGTERM, then its CPU time (read before reaping).
    fn stop(mut self) -> Result<Duration> {
        if let Some(status) = self.proc.try_wait()? {
            self.drain();
            bail!("the collector exited during the run ({status}); it said:\n{}", self.said.join("\n"));
        }
        child::signal(&mut self.proc, Signal::SIGTERM)?;
        if !child::wait_exited_unreaped(&self.proc, Duration::from_secs(30))? {
            bail!("the collector did not exit within 30 s of SIGTERM");
        }
        let cpu = cpu_time(self.proc.id())?;
        self.proc.wait()?;
        Ok(cpu)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        child::kill_and_reap(&mut self.proc);
    }
}

/// OTLP gRPC in on loopback, the file exporter out (OTLP JSON, one
/// request per line, unbuffered under the default rotation settings);
/// no processor, so nothing waits in between; no telemetry port of its own
/// (several may run on this machine).
fn collector_config(port: u16, file: &Path) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
exporters:
  file:
    path: {file:?}
    format: json
    rotation:
      max_megabytes: 100000
service:
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
",
        file = file.display().to_string()
    )
}

// ---------------------------------------------------------------------------
// One attached run

/// A trace seen in the collector's file: its root span and when it came.
struct Trace {
    ns: usize,
    /// The first time the root span was seen in the file (unix ns, upper bound).
    arrival_unix_ns: u64,
    root_start_unix_ns: u64,
    root_end_unix_ns: u64,
    /// The latest end of any child span or span event of this trace seen.
    last_child_unix_ns: u64,
    spans: u64,
    span_events: u64,
    /// Root attributes with an integer value, by key.
    root_ints: BTreeMap<String, i64>,
    /// Root attributes with a string value, by key.
    root_strings: BTreeMap<String, String>,
    /// Seen only after the agent was told to stop.
    after_stop: bool,
}

/// Reads the collector's file as it grows.
struct FileReader {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    ns_by_inode: HashMap<u64, usize>,
    ns_by_name: HashMap<String, usize>,
    traces: HashMap<String, Trace>,
    /// Spans of traces whose root has not been seen (yet): trace id → (spans, span events, last end).
    orphans: HashMap<String, (u64, u64, u64)>,
    /// (arrival unix ns, spans of our namespaces in that read).
    arrivals: Vec<(u64, u64)>,
    spans_all: u64,
    requests: u64,
    /// Root spans of our namespaces that are not `tcp.reset.burst`.
    other_roots: BTreeMap<String, u64>,
    stopping: bool,
}

impl FileReader {
    fn new(path: &Path, namespaces: &Namespaces) -> Self {
        Self::with(path, namespaces.by_inode(), namespaces.by_name())
    }

    fn with(path: &Path, ns_by_inode: HashMap<u64, usize>, ns_by_name: HashMap<String, usize>) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
            ns_by_inode,
            ns_by_name,
            traces: HashMap::new(),
            orphans: HashMap::new(),
            arrivals: Vec::new(),
            spans_all: 0,
            requests: 0,
            other_roots: BTreeMap::new(),
            stopping: false,
        }
    }

    /// Reads what was added since the last call; a line is parsed once complete.
    fn poll(&mut self) -> Result<()> {
        // What the file holds now was there at `now`: arrival ≤ now.
        let now = unix_ns();
        let mut file = match fs::File::open(&self.path) {
            Ok(f) => f,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err).with_context(|| format!("opening {}", self.path.display())),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut added = Vec::new();
        file.read_to_end(&mut added)?;
        if added.is_empty() {
            return Ok(());
        }
        self.offset += added.len() as u64;
        self.partial.extend_from_slice(&added);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else { return Ok(()) };
        let complete: Vec<u8> = self.partial.drain(..=last_newline).collect();
        let mut ours = 0;
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let request: Value = serde_json::from_slice(line).with_context(|| {
                format!("{}: a line that is not JSON: {:?}", self.path.display(), String::from_utf8_lossy(line))
            })?;
            self.requests += 1;
            ours += self.request(&request, now);
        }
        if ours > 0 {
            self.arrivals.push((now, ours));
        }
        Ok(())
    }

    /// One `ExportTraceServiceRequest`; returns the spans of our namespaces in it.
    fn request(&mut self, request: &Value, now: u64) -> u64 {
        let mut ours = 0;
        for rs in request["resourceSpans"].as_array().into_iter().flatten() {
            let resource = &rs["resource"]["attributes"];
            let ns = self.namespace_of(resource);
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    self.spans_all += 1;
                    let Some(ns) = ns else { continue };
                    ours += 1;
                    self.span(ns, span, now);
                }
            }
        }
        ours
    }

    fn span(&mut self, ns: usize, span: &Value, now: u64) {
        let trace_id = span["traceId"].as_str().unwrap_or_default().to_ascii_lowercase();
        let parent = span["parentSpanId"].as_str().unwrap_or_default();
        let end = uint(&span["endTimeUnixNano"]);
        let events = span["events"].as_array().map_or(0, Vec::len) as u64;
        let last_event = span["events"].as_array().into_iter().flatten().map(|e| uint(&e["timeUnixNano"])).max();
        if !parent.is_empty() {
            let last = last_event.unwrap_or(0).max(end);
            match self.traces.get_mut(&trace_id) {
                Some(t) => {
                    t.spans += 1;
                    t.span_events += events;
                    t.last_child_unix_ns = t.last_child_unix_ns.max(last);
                }
                None => {
                    let o = self.orphans.entry(trace_id).or_default();
                    o.0 += 1;
                    o.1 += events;
                    o.2 = o.2.max(last);
                }
            }
            return;
        }
        let name = span["name"].as_str().unwrap_or_default();
        if name != EPISODE {
            *self.other_roots.entry(name.to_string()).or_default() += 1;
            return;
        }
        if let Some(t) = self.traces.get_mut(&trace_id) {
            // A second root of a trace already seen: count its spans, keep the first arrival.
            t.spans += 1;
            return;
        }
        let (spans, orphan_events, orphan_last) = self.orphans.remove(&trace_id).unwrap_or_default();
        let mut root_ints = BTreeMap::new();
        let mut root_strings = BTreeMap::new();
        for kv in span["attributes"].as_array().into_iter().flatten() {
            let Some(key) = kv["key"].as_str() else { continue };
            if let Some(i) = kv["value"].get("intValue").and_then(int) {
                root_ints.insert(key.to_string(), i);
            } else if let Some(s) = kv["value"].get("stringValue").and_then(Value::as_str) {
                root_strings.insert(key.to_string(), s.to_string());
            }
        }
        self.traces.insert(
            trace_id,
            Trace {
                ns,
                arrival_unix_ns: now,
                root_start_unix_ns: uint(&span["startTimeUnixNano"]),
                root_end_unix_ns: end,
                last_child_unix_ns: orphan_last.max(last_event.unwrap_or(0)),
                spans: spans + 1,
                span_events: orphan_events + events,
                root_ints,
                root_strings,
                after_stop: self.stopping,
            },
        );
    }

    /// Which of our namespaces a resource is: an integer attribute equal to
    /// one's inode, or a string attribute that names one.
    fn namespace_of(&self, attributes: &Value) -> Option<usize> {
        for kv in attributes.as_array().into_iter().flatten() {
            let value = &kv["value"];
            if let Some(i) = value.get("intValue").and_then(int).and_then(|i| u64::try_from(i).ok())
                && let Some(&ns) = self.ns_by_inode.get(&i)
            {
                return Some(ns);
            }
            if let Some(s) = value.get("stringValue").and_then(Value::as_str)
                && let Some(at) = s.find(NS_PREFIX)
                && let Some(&ns) = self.ns_by_name.get(&s[at..])
            {
                return Some(ns);
            }
        }
        None
    }
}

/// A 64-bit integer as the OTLP JSON mapping writes it: a string, or a number.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn uint(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// What one attached run measured.
struct Attached {
    generated: Generated,
    traces: Vec<Trace>,
    /// Spans of our traces whose root never came.
    orphan_spans: u64,
    other_roots: BTreeMap<String, u64>,
    arrivals: Vec<(u64, u64)>,
    spans_all: u64,
    requests: u64,
    agent_cpu: Duration,
    agent_cpu_busy: Duration,
    rss_at_ready_kib: u64,
    peak_rss_kib: u64,
    agent_events: u64,
    agent_lost: u64,
    /// The agent's last status-looking lines on stderr.
    agent_said: Vec<String>,
    collector_cpu: Duration,
    /// Seconds from the agent's SIGTERM to its exit.
    agent_stop_s: f64,
    quiet: Duration,
    waited_s: f64,
}

impl Attached {
    fn ours(&self) -> impl Iterator<Item = &Trace> {
        self.traces.iter()
    }

    fn spans(&self) -> u64 {
        self.arrivals.iter().map(|&(_, n)| n).sum()
    }

    /// Spans per second from the first arrival to the last.
    fn spans_per_s_busy(&self) -> Option<f64> {
        let first = self.arrivals.first()?.0;
        let last = self.arrivals.last()?.0;
        let span_s = (last - first) as f64 / 1e9;
        (span_s > 0.0).then(|| self.spans() as f64 / span_s)
    }

    /// The most spans arriving within one second (bins from the first arrival).
    fn spans_per_s_peak(&self) -> Option<u64> {
        let first = self.arrivals.first()?.0;
        let mut bins: BTreeMap<u64, u64> = BTreeMap::new();
        for &(t, n) in &self.arrivals {
            *bins.entry((t - first) / 1_000_000_000).or_default() += n;
        }
        bins.values().copied().max()
    }

    /// Median of (root end − its last child span's or span event's end),
    /// ms: the root also covers signals that have no span of their own (a
    /// `net.drop.summary` counted into it), which can end it later.
    fn root_after_last_child_ms(&self) -> Option<f64> {
        let gaps: Vec<f64> = self
            .ours()
            .filter(|t| t.last_child_unix_ns > 0)
            .map(|t| t.root_end_unix_ns.saturating_sub(t.last_child_unix_ns) as f64 / 1e6)
            .collect();
        (!gaps.is_empty()).then(|| report::median_of(gaps))
    }

    /// Each trace's arrival − its close (the root's end, which is its last
    /// signal, + the quiet period), in ms; traces seen before the stop only.
    fn latencies_ms(&self) -> Vec<f64> {
        let quiet = self.quiet.as_nanos() as i128;
        let mut v: Vec<f64> = self
            .ours()
            .filter(|t| !t.after_stop)
            .map(|t| (t.arrival_unix_ns as i128 - (t.root_end_unix_ns as i128 + quiet)) as f64 / 1e6)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn per_namespace(&self, namespaces: usize) -> Vec<usize> {
        let mut n = vec![0; namespaces];
        for t in self.ours() {
            n[t.ns] += 1;
        }
        n
    }

    fn progress(&self, w: &Workload, namespaces: usize) -> String {
        let lat = self.latencies_ms();
        format!(
            "{}/{} episodes, {} spans ({:.0}/s busy), latency median {:.1} ms p99 {:.1} ms, agent CPU {:.3}s, peak RSS {:.1} MiB, generator CPU {:.3}s",
            self.traces.len(),
            namespaces * w.rounds,
            self.spans(),
            self.spans_per_s_busy().unwrap_or(f64::NAN),
            report::median(&lat).unwrap_or(f64::NAN),
            percentile(&lat, 0.99).unwrap_or(f64::NAN),
            self.agent_cpu.as_secs_f64(),
            self.peak_rss_kib as f64 / 1024.0,
            self.generated.cpu.as_secs_f64(),
        )
    }

    fn to_json(&self, run: usize, w: &Workload, namespaces: usize) -> Value {
        let lat = self.latencies_ms();
        let per_ns = self.per_namespace(namespaces);
        let mut ns_histogram: BTreeMap<usize, usize> = BTreeMap::new();
        for &n in &per_ns {
            *ns_histogram.entry(n).or_default() += 1;
        }
        let mut closes: BTreeMap<String, u64> = BTreeMap::new();
        for t in self.ours() {
            for (k, v) in &t.root_strings {
                if k.contains("close") {
                    *closes.entry(format!("{k}={v}")).or_default() += 1;
                }
            }
        }
        // The root's exact counts per signal (`observer.count.*`), summed over the episodes.
        let mut int_sums: BTreeMap<&str, i64> = BTreeMap::new();
        for t in self.ours() {
            for (k, v) in t.root_ints.iter().filter(|(k, _)| k.starts_with("observer.count.")) {
                *int_sums.entry(k).or_default() += v;
            }
        }
        let resets_counted: i64 =
            int_sums.iter().filter(|(k, _)| k.starts_with("observer.count.tcp.reset.")).map(|(_, v)| v).sum();
        let lengths: Vec<f64> =
            self.ours().map(|t| t.root_end_unix_ns.saturating_sub(t.root_start_unix_ns) as f64 / 1e6).collect();
        let spans_per_episode: Vec<f64> = self.ours().map(|t| t.spans as f64).collect();
        let events_per_episode: Vec<f64> = self.ours().map(|t| t.span_events as f64).collect();
        let after_stop = self.ours().filter(|t| t.after_stop).count();
        let expected = (namespaces * w.rounds) as u64;
        json!({
            "run": run,
            "episodes_expected": expected,
            "episodes_exported": self.traces.len(),
            "episodes_seen_after_agent_stop": after_stop,
            "namespaces_by_episode_count": ns_histogram.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "latency_ms": latency_json(&lat),
            "root_end_after_last_child_ms_median": self.root_after_last_child_ms(),
            "spans_of_these_episodes": self.spans(),
            "spans_without_root": self.orphan_spans,
            "spans_in_file_all_workloads": self.spans_all,
            "requests_in_file": self.requests,
            "other_root_spans_of_these_namespaces": self.other_roots,
            "spans_per_s_busy": self.spans_per_s_busy(),
            "spans_per_s_peak_1s": self.spans_per_s_peak(),
            "busy_s": self.arrivals.first().zip(self.arrivals.last()).map(|(a, b)| (b.0 - a.0) as f64 / 1e9),
            "spans_per_episode_median": report::median_of(spans_per_episode),
            "span_events_per_episode_median": report::median_of(events_per_episode),
            "episode_length_ms_median": report::median_of(lengths),
            "root_close_attributes": closes,
            "root_counts_summed": int_sums,
            "resets_counted_in_episodes": resets_counted,
            "connects": self.generated.connects,
            "refused": self.generated.refused,
            "resets_generated": 2 * self.generated.refused,
            "generator_cpu_s": self.generated.cpu.as_secs_f64(),
            "round_wall_s": self.generated.rounds_s,
            "agent_cpu_s": self.agent_cpu.as_secs_f64(),
            "agent_cpu_busy_s": self.agent_cpu_busy.as_secs_f64(),
            "agent_rss_at_ready_mib": self.rss_at_ready_kib as f64 / 1024.0,
            "agent_peak_rss_mib": self.peak_rss_kib as f64 / 1024.0,
            "agent_events_all_namespaces": self.agent_events,
            "agent_lost": self.agent_lost,
            "agent_stop_s": self.agent_stop_s,
            "agent_status_lines": self.agent_said,
            "collector_cpu_s": self.collector_cpu.as_secs_f64(),
            "waited_after_last_round_s": self.waited_s,
        })
    }
}

/// What every attached run uses.
struct Setup<'a> {
    agent: &'a Path,
    collector: &'a Path,
    port: u16,
    quiet: Duration,
    keep_file: Option<&'a Path>,
}

fn attached_run(setup: &Setup<'_>, dir: &Path, namespaces: &Namespaces, workload: &Workload) -> Result<Attached> {
    let &Setup { agent: bin, collector: otelcol, port, quiet, keep_file } = setup;
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    let collector_dir = dir.join("collector");
    fs::create_dir_all(&collector_dir)?;
    let file = collector_dir.join("traces.json");
    let mut collector = Collector::start(otelcol, &collector_dir, port, &file)?;
    let quiet_arg = format!("{}ms", quiet.as_millis());
    let agent = Observer::start_with(bin, &dir.join("agent"), &["--episode-quiet", &quiet_arg])?;
    let agent_pid = agent.pid();
    let rss_at_ready_kib = vm_kib(agent_pid, "VmRSS")?;
    let mut peak_rss_kib = vm_kib(agent_pid, "VmHWM")?;
    let cpu_at_start = cpu_time(agent_pid)?;
    let mut reader = FileReader::new(&file, namespaces);
    let mut said = Vec::new();
    let expected = namespaces.len() * workload.rounds;

    let done = AtomicBool::new(false);
    let (generated, waited_s, cpu_busy) = thread::scope(|s| -> Result<(Generated, f64, Duration)> {
        let generator = s.spawn(|| generate(namespaces, workload, Some(&done)));
        let mut generator = Some(generator);
        let mut generated = None;
        let mut gen_done_at: Option<Instant> = None;
        let mut all_in_at: Option<Instant> = None;
        let mut last_sample = Instant::now();
        let mut last_count = 0;
        let mut last_change = Instant::now();
        loop {
            let tick = Instant::now();
            reader.poll()?;
            if last_sample.elapsed() >= SAMPLE {
                peak_rss_kib = peak_rss_kib.max(vm_kib(agent_pid, "VmHWM")?);
                let _ = agent.wait_for(|_| false, Duration::ZERO, &mut said);
                keep_last(&mut said, 400);
                collector.drain();
                last_sample = Instant::now();
            }
            if reader.traces.len() != last_count {
                last_count = reader.traces.len();
                last_change = Instant::now();
            }
            // `done` is set as `generate` returns: the join waits no longer than that.
            if done.load(Ordering::SeqCst)
                && let Some(handle) = generator.take()
            {
                generated = Some(handle.join().map_err(|_| anyhow::anyhow!("the generator thread panicked"))??);
                gen_done_at = Some(Instant::now());
            }
            if let Some(at) = gen_done_at {
                let waited = at.elapsed();
                if all_in_at.is_none() && reader.traces.len() >= expected {
                    all_in_at = Some(Instant::now());
                }
                let settled = all_in_at.is_some_and(|t| t.elapsed() >= SETTLE && last_change.elapsed() >= SETTLE);
                let stalled = waited >= quiet + DRAIN_WITHIN
                    || (waited >= quiet * 3 + Duration::from_secs(5)
                        && last_change.elapsed() >= Duration::from_secs(5));
                if settled || stalled {
                    let cpu_busy = cpu_time(agent_pid)?.saturating_sub(cpu_at_start);
                    let generated = generated.take().context("the generator's figures")?;
                    return Ok((generated, waited.as_secs_f64(), cpu_busy));
                }
            }
            // On an interrupt the generator stops too (it checks each round); the scope joins it.
            interrupt::check()?;
            thread::sleep(POLL.saturating_sub(tick.elapsed()));
        }
    })?;
    peak_rss_kib = peak_rss_kib.max(vm_kib(agent_pid, "VmHWM")?);
    let _ = agent.wait_for(|_| false, Duration::ZERO, &mut said);
    reader.stopping = true;
    let stop_at = Instant::now();
    let stopped = agent.stop()?;
    let agent_stop_s = stop_at.elapsed().as_secs_f64();
    // What the agent flushed on its way out.
    thread::sleep(Duration::from_millis(300));
    reader.poll()?;
    let collector_cpu = collector.stop()?;
    reader.poll()?;
    if let Some(keep) = keep_file {
        fs::copy(&file, keep).with_context(|| format!("copying {} to {}", file.display(), keep.display()))?;
    }

    let orphan_spans = reader.orphans.values().map(|o| o.0).sum();
    let agent_said =
        said.into_iter().filter(|l| !l.trim().is_empty()).rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
    Ok(Attached {
        generated,
        traces: reader.traces.into_values().collect(),
        orphan_spans,
        other_roots: reader.other_roots,
        arrivals: reader.arrivals,
        spans_all: reader.spans_all,
        requests: reader.requests,
        agent_cpu: stopped.cpu,
        agent_cpu_busy: cpu_busy,
        rss_at_ready_kib,
        peak_rss_kib,
        agent_events: stopped.events,
        agent_lost: stopped.lost,
        agent_said,
        collector_cpu,
        agent_stop_s,
        quiet,
        waited_s,
    })
}

fn keep_last(lines: &mut Vec<String>, n: usize) {
    if lines.len() > n {
        lines.drain(..lines.len() - n);
    }
}

/// A `Vm*:` figure of `/proc/PID/status`, in KiB.
fn vm_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

/// The `q` quantile of sorted figures (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn latency_json(sorted: &[f64]) -> Value {
    json!({
        "count": sorted.len(),
        "median": report::median(sorted),
        "p90": percentile(sorted, 0.90),
        "p99": percentile(sorted, 0.99),
        "min": sorted.first(),
        "max": sorted.last(),
    })
}

// ---------------------------------------------------------------------------
// The figures

fn summarize(
    args: &ExportArgs,
    namespaces: &Namespaces,
    workload: &Workload,
    baseline: &[Generated],
    attached: &[Attached],
) -> Result<Value> {
    let n = namespaces.len();
    let med = |f: &dyn Fn(&Attached) -> f64| report::median_of(attached.iter().map(f).collect());
    let base_cpu = report::median_of(baseline.iter().map(|g| g.cpu.as_secs_f64()).collect());
    let with_cpu = med(&|a| a.generated.cpu.as_secs_f64());
    let mut all_lat: Vec<f64> = attached.iter().flat_map(Attached::latencies_ms).collect();
    all_lat.sort_by(f64::total_cmp);
    let window_ms = REORDER_WINDOW.as_secs_f64() * 1e3;
    let beyond: Vec<f64> = all_lat.iter().map(|l| l - window_ms).collect();
    let episodes_expected = (n * workload.rounds) as u64;
    let agent_cpu = med(&|a| a.agent_cpu.as_secs_f64());
    let exported = med(&|a| a.traces.len() as f64);
    let spans = med(&|a| a.spans() as f64);
    let results = json!({
        "bench": "export",
        "machine": machine()?,
        "namespaces": n,
        "rounds": workload.rounds,
        "connects_per_namespace_per_round": workload.burst,
        "resets_per_episode_expected": 2 * workload.burst,
        "round_interval_ms": args.round_interval_ms,
        "episode_quiet_ms": args.quiet_ms,
        "runs_each_way": args.repeat,
        "protocol": "grpc",
        "collector": {"version": collector::VERSION, "pipeline": "otlp receiver (grpc, loopback) -> file exporter (json), no processor"},
        "latency": {
            "meaning": format!(
                "time from an episode's close to its trace's root span being first seen in the collector's file: \
                 arrival (wall clock when the file was read, every ~{} ms, so up to that much late) minus the close, \
                 which is the root span's end (its last signal) + the quiet period ({} ms), as the agent's engine closes it; \
                 the engine processes records only once they are older than its reorder window ({} ms, not a flag), \
                 so that window is inside this latency (see beyond_reorder_window_ms); \
                 pooled over the attached runs, traces seen only after the agent's SIGTERM left out",
                POLL.as_millis(),
                args.quiet_ms,
                REORDER_WINDOW.as_millis()
            ),
            "ms": latency_json(&all_lat),
            "beyond_reorder_window_ms": latency_json(&beyond),
        },
        "median": {
            "episodes_expected": episodes_expected,
            "episodes_exported": exported,
            "spans": spans,
            "spans_per_s_busy": med(&|a| a.spans_per_s_busy().unwrap_or(f64::NAN)),
            "spans_per_s_peak_1s": med(&|a| a.spans_per_s_peak().map_or(f64::NAN, |p| p as f64)),
            "agent_cpu_s": agent_cpu,
            "agent_cpu_busy_s": med(&|a| a.agent_cpu_busy.as_secs_f64()),
            "agent_cpu_us_per_episode": agent_cpu * 1e6 / exported.max(1.0),
            "agent_cpu_us_per_span": agent_cpu * 1e6 / spans.max(1.0),
            "agent_peak_rss_mib": med(&|a| a.peak_rss_kib as f64 / 1024.0),
            "agent_rss_at_ready_mib": med(&|a| a.rss_at_ready_kib as f64 / 1024.0),
            "collector_cpu_s": med(&|a| a.collector_cpu.as_secs_f64()),
            "baseline_generator_cpu_s": base_cpu,
            "observer_generator_cpu_s": with_cpu,
            "generator_cpu_ratio": with_cpu / base_cpu,
            "agent_cpu_vs_baseline_generator_cpu": agent_cpu / base_cpu,
        },
        "spans_per_s_meaning": "spans of these episodes arriving in the collector's file per second, from the first arrival to the last (busy); peak: the most in one second",
        "baseline": baseline.iter().enumerate().map(|(i, g)| g.to_json(i)).collect::<Vec<_>>(),
        "observer": attached.iter().enumerate().map(|(i, a)| a.to_json(i, workload, n)).collect::<Vec<_>>(),
    });
    Ok(results)
}

fn print_figures(results: &Value) {
    let m = &results["median"];
    let l = &results["latency"]["ms"];
    let f = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.1}"));
    println!(
        "bench export ({} namespaces x {} rounds of {} connects, quiet {} ms, medians of {} runs; collector over gRPC):",
        results["namespaces"],
        results["rounds"],
        results["connects_per_namespace_per_round"],
        results["episode_quiet_ms"],
        results["runs_each_way"]
    );
    println!("  episodes exported:   {} of {} expected", f(&m["episodes_exported"]), m["episodes_expected"]);
    println!(
        "  close -> collector:  median {} ms, p99 {} ms (max {} ms, {} traces)",
        f(&l["median"]),
        f(&l["p99"]),
        f(&l["max"]),
        l["count"]
    );
    let b = &results["latency"]["beyond_reorder_window_ms"];
    println!("  ... beyond the agent's 2 s reorder window: median {} ms, p99 {} ms", f(&b["median"]), f(&b["p99"]));
    println!(
        "  spans:               {} per run, {}/s over the busy period, {}/s peak second",
        f(&m["spans"]),
        f(&m["spans_per_s_busy"]),
        f(&m["spans_per_s_peak_1s"])
    );
    println!(
        "  agent:               CPU {} s per run ({} us per episode), peak RSS {} MiB (at ready {} MiB)",
        m["agent_cpu_s"].as_f64().map_or("-".into(), |x| format!("{x:.3}")),
        f(&m["agent_cpu_us_per_episode"]),
        f(&m["agent_peak_rss_mib"]),
        f(&m["agent_rss_at_ready_mib"])
    );
    println!(
        "  generator CPU:       {} s without, {} s with the agent: x{} (agent CPU = x{} the workload's)",
        m["baseline_generator_cpu_s"].as_f64().map_or("-".into(), |x| format!("{x:.3}")),
        m["observer_generator_cpu_s"].as_f64().map_or("-".into(), |x| format!("{x:.3}")),
        m["generator_cpu_ratio"].as_f64().map_or("-".into(), |x| format!("{x:.3}")),
        m["agent_cpu_vs_baseline_generator_cpu"].as_f64().map_or("-".into(), |x| format!("{x:.3}")),
    );
    println!(
        "  collector CPU:       {} s per run",
        m["collector_cpu_s"].as_f64().map_or("-".into(), |x| format!("{x:.3}"))
    );
}

/// The machine the figures come from (as `bench resets` records it).
fn machine() -> Result<Value> {
    let kernel_release = fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_string();
    let nproc = thread::available_parallelism().map_or(0, usize::from);
    let cpu_model = fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
        info.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':')).map(|(_, m)| m.trim().to_string())
    });
    let date = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    Ok(json!({"kernel_release": kernel_release, "nproc": nproc, "cpu_model": cpu_model, "date": date}))
}

/// The run's scratch directory (agent output, collector config and file),
/// removed at the end whatever happens.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let dir = env::temp_dir().join(format!("obs-bench-export-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.0) {
            eprintln!("warning: removing {}: {err}", self.0.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        assert_eq!(percentile(&[], 0.99), None);
    }

    /// Two requests as the file exporter writes them: a child before its
    /// root in the first (split over two reads), a second trace of another
    /// namespace known by inode, and a workload that is not ours.
    #[test]
    fn reads_the_collector_file_as_it_grows() {
        let dir = env::temp_dir().join(format!("obs-bench-export-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("traces.json");
        let by_inode = HashMap::from([(4026532001, 1)]);
        let by_name = HashMap::from([("obs-bx-7-0".to_string(), 0)]);
        let mut reader = FileReader::with(&path, by_inode, by_name);
        reader.poll().unwrap();
        let span = |trace: &str, id: &str, parent: &str, name: &str, end: u64| {
            json!({"traceId": trace, "spanId": id, "parentSpanId": parent, "name": name,
                   "startTimeUnixNano": "1000", "endTimeUnixNano": end.to_string(),
                   "events": [{"timeUnixNano": "1500", "name": "tcp.reset"}]})
        };
        let req = |resource: Value, spans: Vec<Value>| json!({"resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": [{"spans": spans}]}]});
        let first = req(
            json!([{"key": "service.name", "value": {"stringValue": "netns-obs-bx-7-0"}}]),
            vec![span("AA", "02", "01", "tcp.reset", 2000), span("AA", "01", "", EPISODE, 3000)],
        );
        let second = req(
            json!([{"key": "observer.netns", "value": {"intValue": "4026532001"}}]),
            vec![span("bb", "01", "", EPISODE, 5000)],
        );
        let foreign = req(
            json!([{"key": "service.name", "value": {"stringValue": "sshd"}}]),
            vec![span("cc", "01", "", EPISODE, 5000)],
        );
        let text = format!("{first}\n{second}\n{foreign}\n");
        let (a, b) = text.split_at(40);
        fs::write(&path, a).unwrap();
        reader.poll().unwrap();
        assert!(reader.traces.is_empty());
        fs::write(&path, text.clone()).unwrap();
        reader.poll().unwrap();
        assert_eq!(b.len() as u64 + 40, reader.offset);
        assert_eq!(reader.traces.len(), 2);
        let aa = &reader.traces["aa"];
        assert_eq!(
            (aa.ns, aa.spans, aa.span_events, aa.root_end_unix_ns, aa.last_child_unix_ns),
            (0, 2, 2, 3000, 2000)
        );
        assert_eq!(reader.traces["bb"].ns, 1);
        assert_eq!(reader.spans_all, 4);
        assert_eq!(reader.arrivals.iter().map(|a| a.1).sum::<u64>(), 3);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn collector_config_names_port_and_file() {
        let c = collector_config(4317, Path::new("/tmp/x/traces.json"));
        assert!(c.contains("endpoint: 127.0.0.1:4317"));
        assert!(c.contains("path: \"/tmp/x/traces.json\""));
        assert!(c.contains("exporters: [file]"));
    }
}
