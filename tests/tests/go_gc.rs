//! Go GC cycles: the agent's `go.gc` events for a fixture process against
//! the fixture's own `GODEBUG=gctrace=1` lines (one `gc N` line per cycle).
//!
//! The fixture waits on stdin until the agent says it attached, so no cycle
//! happens before the probes are in place; every cycle of the process is
//! then both printed and seen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use observer_e2e::gofixture::{self, GoFixture, cycle_set, gctrace_cycles};
use observer_e2e::observer::{Observer, Stopped};
use observer_e2e::require::require_root_and_bin;

const ATTACH_WITHIN: Duration = Duration::from_secs(10);
const RUN_WITHIN: Duration = Duration::from_secs(60);
const GCTRACE: (&str, &str) = ("GODEBUG", "gctrace=1");

fn fixture_bin() -> PathBuf {
    gofixture::build(&build_dir())
}

fn build_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go_gc");
    std::fs::create_dir_all(&dir).expect("fixture build directory");
    dir
}

fn attached(pid: u32) -> String {
    format!("observer: go: attached pid={pid} ")
}

/// The `go.gc` events of `pid`, as (cycle, event).
fn gc_events(stopped: &Stopped, pid: u32) -> Vec<serde_json::Value> {
    stopped.events.iter().filter(|e| e["kind"] == "go.gc" && e["pid"] == pid).cloned().collect()
}

/// Every gctrace cycle seen once, with the same numbers, and each event
/// names the process and its Go version.
fn assert_same_cycles(events: &[serde_json::Value], gctrace: &[u32], stderr: &str) {
    assert!(!gctrace.is_empty(), "the fixture ran no GC cycle; its stderr:\n{stderr}");
    assert_eq!(events.len(), gctrace.len(), "go.gc events vs gctrace `gc N` lines; fixture stderr:\n{stderr}");
    let cycles: Vec<u32> = events
        .iter()
        .map(|e| e["cycle"].as_u64().and_then(|c| u32::try_from(c).ok()).unwrap_or_else(|| panic!("no cycle in {e}")))
        .collect();
    assert_eq!(cycle_set(&cycles), cycle_set(gctrace), "cycle numbers");
    assert_eq!(cycle_set(&cycles).len(), cycles.len(), "each cycle once: {cycles:?}");
    let version = events[0]["go_version"].as_str().unwrap_or_default();
    assert!(version.starts_with("go1."), "go_version in {}", events[0]);
    assert_eq!(events[0]["go_module"], "example.invalid/gofixture");
    assert_eq!(events[0]["cgroup_source"], "process");
}

/// Runs a `-wait-stdin` fixture to its end once the agent watches it.
fn run_watched(observer: &mut Observer, mut fixture: GoFixture) -> gofixture::Finished {
    observer.wait_for_stderr(&attached(fixture.pid), ATTACH_WITHIN);
    fixture.go();
    fixture.finish(RUN_WITHIN)
}

#[test]
fn gc_cycles_match_gctrace() {
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = fixture_bin();
    let mut observer = Observer::start(&bin);
    let fixture = GoFixture::start(&fixture_bin, &["-wait-stdin", "-allocs", "20000", "-alloc-size", "65536"], &[GCTRACE]);
    let pid = fixture.pid;
    let finished = run_watched(&mut observer, fixture);
    let stopped = observer.stop();
    assert_eq!(stopped.lost, 0, "ring buffer losses");
    assert_same_cycles(&gc_events(&stopped, pid), &gctrace_cycles(&finished.stderr), &finished.stderr);
}

#[test]
fn with_gogc_off_only_forced_cycles() {
    const FORCED: u32 = 5;
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = fixture_bin();
    let mut observer = Observer::start(&bin);
    let forced = FORCED.to_string();
    let fixture = GoFixture::start(
        &fixture_bin,
        &["-wait-stdin", "-allocs", "20000", "-forced-gcs", &forced],
        &[GCTRACE, ("GOGC", "off"), ("GOMEMLIMIT", "off")],
    );
    let pid = fixture.pid;
    let finished = run_watched(&mut observer, fixture);
    let stopped = observer.stop();
    let gctrace = gctrace_cycles(&finished.stderr);
    assert_eq!(gctrace, (1..=FORCED).collect::<Vec<_>>(), "gctrace of a GOGC=off run: only the forced cycles");
    let events = gc_events(&stopped, pid);
    assert_eq!(events.len(), FORCED as usize, "go.gc events with GOGC=off");
    assert_same_cycles(&events, &gctrace, &finished.stderr);
}

/// A position-independent binary: the runtime's globals move by the load
/// bias, which the agent reads from the process's mappings.
#[test]
fn pie_binary_cycles_match_gctrace() {
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = gofixture::build_variant(&build_dir(), "gofixture-pie", &["-buildmode=pie"]);
    let mut observer = Observer::start(&bin);
    let fixture = GoFixture::start(&fixture_bin, &["-wait-stdin", "-allocs", "10000", "-forced-gcs", "2"], &[GCTRACE]);
    let pid = fixture.pid;
    let finished = run_watched(&mut observer, fixture);
    let stopped = observer.stop();
    assert_same_cycles(&gc_events(&stopped, pid), &gctrace_cycles(&finished.stderr), &finished.stderr);
}

/// Stripped (`-ldflags=-s -w`): no symbol table, and `.gopclntab` is not
/// read yet, so the agent says so once and traces nothing for it.
#[test]
fn stripped_binary_gets_one_clear_warning() {
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = gofixture::build_variant(&build_dir(), "gofixture-stripped", &["-ldflags=-s -w"]);
    let mut observer = Observer::start(&bin);
    let fixture = GoFixture::start(&fixture_bin, &["-wait-stdin", "-forced-gcs", "2"], &[GCTRACE]);
    let pid = fixture.pid;
    let warning = observer.wait_for_stderr("no symbol runtime.gcMarkTermination", ATTACH_WITHIN);
    assert!(warning.contains(&format!("Go process {pid} ")) && warning.contains("stripped"), "{warning}");
    let mut fixture = fixture;
    fixture.go();
    let finished = fixture.finish(RUN_WITHIN);
    let stopped = observer.stop();
    assert_eq!(gctrace_cycles(&finished.stderr).len(), 2, "the fixture's own cycles");
    assert!(gc_events(&stopped, pid).is_empty(), "no go.gc events for a binary that is not traced");
}

/// What the agent holds: BPF links, kernel-object descriptors (links, perf
/// events, maps, programs: `anon_inode:` ones; files the agent opens
/// briefly while scanning `/proc` are not counted), `GO_PROCS` entries.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    links: usize,
    fds: usize,
    go_procs: usize,
}

fn held(agent: u32) -> Held {
    let mut links = 0;
    let mut fds = 0;
    let mut go_procs = None;
    let dir = format!("/proc/{agent}/fdinfo");
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")).flatten() {
        let fd = format!("/proc/{agent}/fd/{}", entry.file_name().to_string_lossy());
        if !std::fs::read_link(&fd).is_ok_and(|t| t.to_string_lossy().starts_with("anon_inode:")) {
            continue;
        }
        fds += 1;
        let Ok(info) = std::fs::read_to_string(entry.path()) else { continue };
        let field = |key: &str| info.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
        if field("link_id:").is_some() {
            links += 1;
        }
        if let Some(id) = field("map_id:") {
            let show = bpftool(&["map", "show", "id", id]);
            if show["name"] == "GO_PROCS" {
                go_procs = bpftool(&["map", "dump", "id", id]).as_array().map(Vec::len);
            }
        }
    }
    Held { links, fds, go_procs: go_procs.expect("the agent holds a GO_PROCS map") }
}

fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = observer_e2e::command::run_ok(std::process::Command::new("bpftool").arg("-j").args(args));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}"))
}

#[test]
fn attaches_to_an_already_running_process() {
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = fixture_bin();
    let fixture = GoFixture::start(&fixture_bin, &["-wait-stdin", "-allocs", "10000", "-forced-gcs", "2"], &[GCTRACE]);
    let pid = fixture.pid;
    let mut observer = Observer::start(&bin);
    observer.wait_for_stderr(&attached(pid), ATTACH_WITHIN);
    let watching = held(observer.pid());
    assert!(watching.links >= 1 && watching.go_procs >= 1, "while watching: {watching:?}");
    let finished = run_watched(&mut observer, fixture);
    // Its probe, map entry and descriptors go when it does.
    observer.wait_for_stderr(&format!("observer: go: detached pid={pid}"), ATTACH_WITHIN);
    let after = held(observer.pid());
    let expected = Held { links: watching.links - 1, fds: watching.fds - 1, go_procs: watching.go_procs - 1 };
    let stopped = observer.stop();
    // Other Go processes on the machine may come and go meanwhile; this
    // test's machine runs none of its own.
    assert_eq!(after, expected, "held while watching the fixture: {watching:?}");
    assert_same_cycles(&gc_events(&stopped, pid), &gctrace_cycles(&finished.stderr), &finished.stderr);
}
