//! No GC cycle lost at a Go process's start. A process of a binary whose
//! probes are live is watched by the kernel from its exec (the exec program
//! writes its entry before it runs user code): every cycle gctrace prints is
//! reported, for processes started one after another and several at once.
//! A binary seen for the first time is watched from when the agent attached,
//! and its first `go.gc` says how many cycles ran before: reported cycles
//! plus those equal gctrace's count.
//!
//! The fixtures here do not wait on stdin: they allocate from their first
//! instruction, with a small GOGC, so cycles start at once. Each test copies
//! the fixture to a file of its own, a binary the agent has never seen.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use observer_e2e::gofixture::{self, GoFixture, Toolchain, Variant, cycle_set, gctrace_cycles};
use observer_e2e::observer::{Observer, Stopped};
use observer_e2e::require::require_root_and_bin;
use observer_e2e::scrape::{Sample, get, samples};
use rstest::rstest;

const ATTACH_WITHIN: Duration = Duration::from_secs(10);
const RUN_WITHIN: Duration = Duration::from_secs(60);
const NEWEST: &str = "go1.27.4";
/// GC cycles from the start: many small ones.
const BUSY: &[&str] = &["-allocs", "4000", "-alloc-size", "65536", "-forced-gcs", "1"];
const ENV: &[(&str, &str)] = &[("GODEBUG", "gctrace=1"), ("GOGC", "10")];
/// Processes started one after another, then together.
const IN_A_ROW: usize = 3;
const AT_ONCE: usize = 3;

/// The fixture, copied to a new file (a new inode: never seen by the agent).
fn fresh_copy(variant: Variant, dir: &Path) -> PathBuf {
    let built = gofixture::build(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("gofixtures"),
        Toolchain::Release(NEWEST),
        variant,
    );
    let copy = dir.join("gofixture-start");
    std::fs::copy(&built, &copy).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
    copy
}

fn events_of<'a>(stopped: &'a Stopped, kind: &str, pid: u32) -> Vec<&'a serde_json::Value> {
    stopped.events.iter().filter(|e| e["kind"] == kind && e["pid"] == pid).collect()
}

/// One run: its pid, gctrace's cycle numbers, its stderr.
type Run = (u32, Vec<u32>, String);

fn run(bin: &Path) -> Run {
    let fixture = GoFixture::start(bin, BUSY, ENV);
    let pid = fixture.pid;
    let finished = fixture.finish(RUN_WITHIN);
    (pid, gctrace_cycles(&finished.stderr), finished.stderr)
}

/// The go.gc cycle numbers of `pid`, and the first event's `cycles_unseen`.
fn reported(stopped: &Stopped, pid: u32) -> (Vec<u32>, Option<u64>) {
    let events = events_of(stopped, "go.gc", pid);
    let cycles = events.iter().map(|e| e["cycle"].as_u64().expect("a cycle number") as u32).collect();
    let first = events.iter().min_by_key(|e| e["cycle"].as_u64());
    (cycles, first.and_then(|e| e["cycles_unseen"].as_u64()))
}

fn watched_from(stopped: &Stopped, pid: u32) -> String {
    let attach = events_of(stopped, "go.attach", pid);
    assert_eq!(attach.len(), 1, "one go.attach for pid {pid}: {attach:?}");
    attach[0]["watched_from"].as_str().unwrap_or_default().to_string()
}

/// `/metrics` once it counts `attaches` go.attach records. The agent
/// publishes its figures once a second, each counter with the records of
/// the same tick: the counters then cover every one of those processes.
fn metrics_after(agent: &Observer, attaches: usize) -> Vec<Sample> {
    let deadline = Instant::now() + ATTACH_WITHIN;
    loop {
        let (status, body) = get(agent.metrics_addr(), "/metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        let all = samples(&body);
        let records = all
            .iter()
            .find(|s| s.name == "observer_records_total" && s.label("kind") == Some("go.attach"))
            .map_or(0.0, |s| s.value);
        if records >= attaches as f64 {
            return all;
        }
        assert!(Instant::now() < deadline, "{records} go.attach records on /metrics, not {attaches}:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn counter(samples: &[Sample], name: &str) -> f64 {
    samples.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name} on /metrics")).value
}

#[rstest]
fn a_known_binarys_processes_lose_no_cycle(#[values(Variant::Plain, Variant::Pie)] variant: Variant) {
    let Some(bin) = require_root_and_bin() else { return };
    let dir = tempfile::tempdir().expect("a directory for the copy");
    let fixture = fresh_copy(variant, dir.path());
    let mut agent = Observer::start(&bin);

    // The first process of the binary: watched from when the agent got to it.
    let first = run(&fixture);
    // One that keeps the binary's probes live while the others come and go.
    let mut holder = GoFixture::start(&fixture, &["-wait-stdin", "-allocs", "10"], &[]);
    agent.wait_for_stderr(&format!("observer: go: attached pid={} ", holder.pid), ATTACH_WITHIN);
    let mut runs: Vec<Run> = (0..IN_A_ROW).map(|_| run(&fixture)).collect();
    std::thread::scope(|s| {
        let started: Vec<_> = (0..AT_ONCE).map(|_| s.spawn(|| run(&fixture))).collect();
        runs.extend(started.into_iter().map(|h| h.join().expect("a run")));
    });
    holder.go();
    holder.finish(RUN_WITHIN);
    // Every process: the first run, the holder and the runs.
    let metrics = metrics_after(&agent, 2 + IN_A_ROW + AT_ONCE);
    let from_exec = counter(&metrics, "observer_go_watched_from_exec_total");
    let mismatches = counter(&metrics, "observer_go_exec_entry_mismatches_total");
    let stopped = agent.stop();
    assert_eq!(stopped.lost, 0, "ring buffer losses");

    let (pid, gctrace, stderr) = &first;
    assert!(!gctrace.is_empty(), "the first run ran no cycle:\n{stderr}");
    assert_eq!(watched_from(&stopped, *pid), "attach");
    let (cycles, unseen) = reported(&stopped, *pid);
    let unseen = unseen.unwrap_or_else(|| panic!("no cycles_unseen on pid {pid}'s first go.gc"));
    assert_eq!(cycles.len() as u64 + unseen, gctrace.len() as u64, "first run: reported + unseen vs gctrace");
    let tail: Vec<u32> = gctrace.iter().copied().filter(|&c| u64::from(c) > unseen).collect();
    assert_eq!(cycle_set(&cycles), cycle_set(&tail), "first run: the cycles after those unseen");
    eprintln!("first run: {} cycles, {unseen} before the probes were live", gctrace.len());

    for (pid, gctrace, stderr) in &runs {
        assert!(!gctrace.is_empty(), "pid {pid} ran no cycle:\n{stderr}");
        assert_eq!(watched_from(&stopped, *pid), "exec", "pid {pid}");
        let (cycles, unseen) = reported(&stopped, *pid);
        assert_eq!(cycles.len(), gctrace.len(), "pid {pid}: go.gc events vs gctrace `gc N` lines");
        assert_eq!(cycle_set(&cycles), cycle_set(gctrace), "pid {pid}: cycle numbers");
        assert_eq!(unseen, Some(0), "pid {pid}: watched from its exec");
    }
    // The holder too, when it came while the first run's probes lingered.
    let exec_attaches =
        stopped.events.iter().filter(|e| e["kind"] == "go.attach" && e["watched_from"] == "exec").count();
    assert!(exec_attaches >= IN_A_ROW + AT_ONCE, "{exec_attaches} processes watched from their exec");
    assert_eq!(from_exec, exec_attaches as f64, "observer_go_watched_from_exec_total vs the go.attach records");
    assert_eq!(mismatches, 0.0, "entries the exec program got wrong");
}
