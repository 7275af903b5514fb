//! Go runtime events: the agent's `go.gc` events for a fixture process
//! against the fixture's own `GODEBUG=gctrace=1` lines (one `gc N` line per
//! cycle, with the same heap figures, goal and clock triple), for every
//! covered Go release and build variant; GOGC and GOMEMLIMIT as set; mark
//! assists (`go.assist`) only where the fixture forces them; heap growth
//! and memory returned to the OS against the runtime's own figures.
//!
//! The fixture waits on stdin until the agent says it attached, so no cycle
//! happens before the probes are in place; every cycle of the process is
//! then both printed and seen. Fixtures are built once per release and
//! variant into a cache under `target/` and reused by later runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use observer_e2e::gofixture::{self, GcTrace, GoFixture, Toolchain, Variant, cycle_set, fmt_ns_as_ms, gctrace_cycles};
use observer_e2e::observer::{Observer, Stopped};
use observer_e2e::require::{require_path, require_root_and_bin};
use observer_e2e::tracefs::{Recorder, UprobeEvent};
use rstest::rstest;

const ATTACH_WITHIN: Duration = Duration::from_secs(10);
const RUN_WITHIN: Duration = Duration::from_secs(60);
/// For the agent to close the probes of a binary no process runs any more
/// (it keeps them a couple of seconds for the next process, then the kernel
/// removes them one at a time).
const SETTLE_WITHIN: Duration = Duration::from_secs(60);
const GCTRACE: (&str, &str) = ("GODEBUG", "gctrace=1");
/// Short runs: a few automatic cycles plus forced ones.
const WORK: &[&str] = &["-wait-stdin", "-allocs", "10000", "-alloc-size", "65536", "-forced-gcs", "2"];
/// The matrix runs with GOGC and GOMEMLIMIT set (the limit far above what
/// the fixture uses), and the events must report exactly these.
const GOGC: i64 = 150;
const GOMEMLIMIT: i64 = 6 << 30;
/// A pointer-rich live heap marked while goroutines allocate hard, with a
/// small GOGC: the runtime makes them assist.
const ASSIST_WORK: &[&str] =
    &["-wait-stdin", "-live-mb", "32", "-assisters", "4", "-allocs", "1000", "-alloc-size", "65536"];
const ASSIST_GOGC: (&str, &str) = ("GOGC", "20");
/// `math.MaxInt64`: the runtime's memory limit when none is set.
const NO_LIMIT: i64 = i64::MAX;
/// The release the single-version tests use.
const NEWEST: &str = "go1.27.4";

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("gofixtures")
}

fn fixture_bin(toolchain: Toolchain, variant: Variant) -> PathBuf {
    gofixture::build(&cache_dir(), toolchain, variant)
}

fn attached(pid: u32) -> String {
    format!("observer: go: attached pid={pid} ")
}

/// The `go.gc` events of `pid`.
fn gc_events(stopped: &Stopped, pid: u32) -> Vec<serde_json::Value> {
    events_of(stopped, "go.gc", pid)
}

/// The events of one kind of `pid`.
fn events_of(stopped: &Stopped, kind: &str, pid: u32) -> Vec<serde_json::Value> {
    stopped.events.iter().filter(|e| e["kind"] == kind && e["pid"] == pid).cloned().collect()
}

fn u64_of(event: &serde_json::Value, key: &str) -> Option<u64> {
    event[key].as_u64()
}

/// Every cycle's figures as gctrace printed them: heap A->B->C and goal
/// after the same `>> 20`, the clock triple formatted the same way; start
/// before end; and GOGC / GOMEMLIMIT as the process had them.
fn assert_figures_match(events: &[serde_json::Value], trace: &[GcTrace], gogc: i64, limit: i64, stderr: &str) {
    for t in trace {
        let e = events
            .iter()
            .find(|e| e["cycle"] == t.cycle)
            .unwrap_or_else(|| panic!("no go.gc event of cycle {}; stderr:\n{stderr}", t.cycle));
        let mib = |key: &str| u64_of(e, key).map(|b| b >> 20).unwrap_or_else(|| panic!("no {key} in {e}"));
        let heap = [mib("heap_start_bytes"), mib("heap_end_bytes"), mib("heap_marked_bytes")];
        assert_eq!(heap, t.heap_mib, "cycle {}: heap A->B->C MiB; event {e}", t.cycle);
        assert_eq!(mib("heap_goal_bytes"), t.goal_mib, "cycle {}: goal MiB; event {e}", t.cycle);
        let ns = |key: &str| u64_of(e, key).unwrap_or_else(|| panic!("no {key} in {e}"));
        let clock = ["sweep_termination_ns", "mark_ns", "mark_termination_ns"].map(|k| fmt_ns_as_ms(ns(k)));
        assert_eq!(clock, t.clock, "cycle {}: clock triple; event {e}", t.cycle);
        let (start, end) = (ns("start_unix_nano"), ns("end_unix_nano"));
        assert_eq!(end - start, ns("sweep_termination_ns") + ns("mark_ns") + ns("mark_termination_ns"), "{e}");
        let when = ns("time_unix_nano");
        // The event is sent right after the cycle ends, in the same process.
        assert!(end <= when + 1_000_000 && when - end < 1_000_000_000, "end {end} vs event time {when}: {e}");
        assert_eq!(e["gogc"].as_i64(), Some(gogc), "GOGC in {e}");
        assert_eq!(e["memory_limit_bytes"].as_i64(), Some(limit), "GOMEMLIMIT in {e}");
    }
}

/// Events of a binary whose globals cannot be located: no figure at all,
/// never a wrong one.
fn assert_no_figures(events: &[serde_json::Value]) {
    const FIGURES: [&str; 13] = [
        "cycle",
        "start_time",
        "end_time",
        "sweep_termination_ns",
        "mark_ns",
        "mark_termination_ns",
        "heap_start_bytes",
        "heap_end_bytes",
        "heap_marked_bytes",
        "heap_goal_bytes",
        "gogc",
        "memory_limit_bytes",
        "start_unix_nano",
    ];
    for e in events {
        for key in FIGURES {
            assert!(e[key].is_null(), "{key} without a layout, never a wrong one: {e}");
        }
    }
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
    assert_process_named(events);
}

fn assert_process_named(events: &[serde_json::Value]) {
    let version = events[0]["go_version"].as_str().unwrap_or_default();
    assert!(version.starts_with("go1."), "go_version in {}", events[0]);
    assert_eq!(events[0]["go_module"], "example.invalid/gofixture");
    assert_eq!(events[0]["cgroup_source"], "process");
}

/// Runs a `-wait-stdin` fixture to its end once the agent watches it;
/// returns the agent's attach line too.
fn run_watched(observer: &mut Observer, mut fixture: GoFixture) -> (String, gofixture::Finished) {
    let line = observer.wait_for_stderr(&attached(fixture.pid), ATTACH_WITHIN);
    fixture.go();
    (line, fixture.finish(RUN_WITHIN))
}

/// One short fixture run under the agent, GOGC and GOMEMLIMIT set: (attach
/// line, gctrace cycles, the pid's events, fixture stderr).
fn watched_run(bin: &Path, fixture_bin: &Path) -> (String, Vec<u32>, Vec<serde_json::Value>, String) {
    let mut observer = Observer::start(bin);
    let (gogc, limit) = (GOGC.to_string(), GOMEMLIMIT.to_string());
    let fixture = GoFixture::start(fixture_bin, WORK, &[GCTRACE, ("GOGC", &gogc), ("GOMEMLIMIT", &limit)]);
    let pid = fixture.pid;
    let (line, finished) = run_watched(&mut observer, fixture);
    let stopped = observer.stop();
    assert_eq!(stopped.lost, 0, "ring buffer losses");
    (line, gctrace_cycles(&finished.stderr), gc_events(&stopped, pid), finished.stderr)
}

/// Every release × variant with symbols: cycle count and numbers match
/// gctrace. With DWARF the offset comes from the binary itself; without
/// (`-ldflags=-w`) from the per-release table, which this verifies.
#[rstest]
fn cycles_match_gctrace(
    #[values("go1.22.12", "go1.23.12", "go1.24.13", "go1.25.14", "go1.26.11", "go1.27.4")] release: &'static str,
    #[values(Variant::Plain, Variant::NoDwarf, Variant::Pie, Variant::Trimpath, Variant::Cgo)] variant: Variant,
) {
    assert!(gofixture::RELEASES.contains(&release), "{release} is not in gofixture::RELEASES");
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = fixture_bin(Toolchain::Release(release), variant);
    let (line, gctrace, events, stderr) = watched_run(&bin, &fixture_bin);
    let layout = if variant == Variant::NoDwarf { "layout=table" } else { "layout=dwarf" };
    assert!(line.contains(&format!("version={release} ")) && line.contains(layout), "{line}");
    assert_same_cycles(&events, &gctrace, &stderr);
    assert_figures_match(&events, &gofixture::gctrace(&stderr), GOGC, GOMEMLIMIT, &stderr);
}

/// Stripped (`-ldflags=-s -w`): the function comes from `.gopclntab`, but
/// `runtime.work` is data and has no entry there: events without cycle
/// numbers, and one warning saying so.
#[rstest]
fn stripped_binary_events_without_cycle_numbers(
    #[values("go1.22.12", "go1.23.12", "go1.24.13", "go1.25.14", "go1.26.11", "go1.27.4")] release: &'static str,
) {
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = fixture_bin(Toolchain::Release(release), Variant::Stripped);
    let mut observer = Observer::start(&bin);
    let fixture = GoFixture::start(&fixture_bin, WORK, &[GCTRACE]);
    let pid = fixture.pid;
    // Other Go processes on the machine may get warnings too: this one's.
    let warning = observer.wait_for_stderr(&format!("Go process {pid} "), ATTACH_WITHIN);
    assert!(warning.contains("no symbol runtime.work ") && warning.contains("stripped"), "{warning}");
    let (line, finished) = run_watched(&mut observer, fixture);
    assert!(line.contains("layout=none"), "{line}");
    let stopped = observer.stop();
    let warnings = stopped_warnings(&stopped, pid);
    assert_eq!(warnings, 1, "one warning for the process");
    let gctrace = gctrace_cycles(&finished.stderr);
    let events = gc_events(&stopped, pid);
    assert!(!gctrace.is_empty(), "the fixture ran no GC cycle");
    assert_eq!(events.len(), gctrace.len(), "go.gc events vs gctrace; stderr:\n{}", finished.stderr);
    assert_no_figures(&events);
    assert_process_named(&events);
}

/// Warnings the agent printed about `pid`.
fn stopped_warnings(stopped: &Stopped, pid: u32) -> usize {
    let needle = format!("Go process {pid} ");
    stopped.stderr.iter().filter(|l| l.contains(&needle)).count()
}

/// Debian's Go 1.19, older than any release the table knows: with DWARF
/// the numbers are right; without, one clear unsupported-version warning
/// and events without cycle numbers.
#[rstest]
fn debian_go_1_19(#[values(Variant::Plain, Variant::NoDwarf)] variant: Variant) {
    let Some(bin) = require_root_and_bin() else { return };
    let go = Path::new(gofixture::DEBIAN_GO_1_19);
    if require_path(go, "apt-get install golang-1.19-go; `cargo xtask setup` does").is_none() {
        return;
    }
    let fixture_bin = fixture_bin(Toolchain::Debian119, variant);
    let mut observer = Observer::start(&bin);
    let fixture = GoFixture::start(&fixture_bin, WORK, &[GCTRACE]);
    let pid = fixture.pid;
    let (line, finished) = run_watched(&mut observer, fixture);
    let stopped = observer.stop();
    assert!(line.contains("version=go1.19."), "{line}");
    let gctrace = gctrace_cycles(&finished.stderr);
    let events = gc_events(&stopped, pid);
    if variant == Variant::Plain {
        assert!(line.contains("layout=dwarf"), "{line}");
        assert_same_cycles(&events, &gctrace, &finished.stderr);
        let trace = gofixture::gctrace(&finished.stderr);
        assert_figures_match(&events, &trace, 100, NO_LIMIT, &finished.stderr);
        return;
    }
    assert!(line.contains("layout=none"), "{line}");
    let warning =
        stopped.stderr.iter().find(|l| l.contains(&format!("Go process {pid} "))).cloned().unwrap_or_default();
    assert!(warning.contains("unsupported Go version") && warning.contains("go1.19"), "warning: {warning:?}");
    assert_eq!(stopped_warnings(&stopped, pid), 1, "one warning for the process");
    assert_eq!(events.len(), gctrace.len(), "go.gc events vs gctrace; stderr:\n{}", finished.stderr);
    assert_no_figures(&events);
}

#[test]
fn with_gogc_off_only_forced_cycles() {
    const FORCED: u32 = 5;
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = fixture_bin(Toolchain::Release(NEWEST), Variant::Plain);
    let mut observer = Observer::start(&bin);
    let forced = FORCED.to_string();
    let fixture = GoFixture::start(
        &fixture_bin,
        &["-wait-stdin", "-allocs", "20000", "-forced-gcs", &forced],
        &[GCTRACE, ("GOGC", "off"), ("GOMEMLIMIT", "off")],
    );
    let pid = fixture.pid;
    let (_, finished) = run_watched(&mut observer, fixture);
    let stopped = observer.stop();
    let gctrace = gctrace_cycles(&finished.stderr);
    assert_eq!(gctrace, (1..=FORCED).collect::<Vec<_>>(), "gctrace of a GOGC=off run: only the forced cycles");
    let events = gc_events(&stopped, pid);
    assert_eq!(events.len(), FORCED as usize, "go.gc events with GOGC=off");
    assert_same_cycles(&events, &gctrace, &finished.stderr);
    let trace = gofixture::gctrace(&finished.stderr);
    assert_figures_match(&events, &trace, -1, NO_LIMIT, &finished.stderr);
    // Nothing allocates while these cycles mark: no assist, in the
    // runtime's own accounting either.
    assert!(trace.iter().all(|t| t.assist_cpu_ms == 0.0), "gctrace shows assists: {trace:?}");
    assert_eq!(events_of(&stopped, "go.assist", pid), Vec::<serde_json::Value>::new(), "go.assist events");
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

/// Samples [`held`] until it is `expected` or `within` passes; the last sample.
fn held_settles_to(agent: u32, expected: &Held, within: Duration) -> Held {
    let deadline = std::time::Instant::now() + within;
    loop {
        let now = held(agent);
        if &now == expected || std::time::Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = observer_e2e::command::run_ok(std::process::Command::new("bpftool").arg("-j").args(args));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}"))
}

#[test]
fn attaches_to_an_already_running_process() {
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = fixture_bin(Toolchain::Release(NEWEST), Variant::Plain);
    let fixture = GoFixture::start(&fixture_bin, WORK, &[GCTRACE]);
    let pid = fixture.pid;
    let mut observer = Observer::start(&bin);
    let line = observer.wait_for_stderr(&attached(pid), ATTACH_WITHIN);
    let probes = attached_probes(&line);
    let watching = held(observer.pid());
    assert!(watching.links >= 1 && watching.go_procs >= 1, "while watching: {watching:?}");
    let (_, finished) = run_watched(&mut observer, fixture);
    // Its map entry goes when it does; its binary's probes and their
    // descriptors once no process of that binary has been watched for a
    // short while (the agent keeps them for the next one).
    observer.wait_for_stderr(&format!("observer: go: detached pid={pid}"), ATTACH_WITHIN);
    let at_detach = held(observer.pid());
    let expected = Held { links: watching.links - probes, fds: watching.fds - probes, go_procs: watching.go_procs - 1 };
    let after = held_settles_to(observer.pid(), &expected, SETTLE_WITHIN);
    let stopped = observer.stop();
    // Other Go processes on the machine may come and go meanwhile; this
    // test's machine runs none of its own.
    assert_eq!(at_detach.go_procs, expected.go_procs, "GO_PROCS entries once detached: {at_detach:?}");
    assert_eq!(after, expected, "held while watching the fixture: {watching:?}");
    let events = gc_events(&stopped, pid);
    assert_same_cycles(&events, &gctrace_cycles(&finished.stderr), &finished.stderr);
    // Nothing set: the runtime's defaults.
    assert_figures_match(&events, &gofixture::gctrace(&finished.stderr), 100, NO_LIMIT, &finished.stderr);
}

/// `probes=N` of an attach line: the uprobes attached for the process.
fn attached_probes(line: &str) -> usize {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("probes="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no probes=N in {line}"))
}

/// A run that forces mark assists: `go.assist` events, each timed from
/// entry to return (return instructions found by decoding the function,
/// from `.symtab` or, stripped, `.gopclntab`), where gctrace's assist CPU
/// time says the runtime made goroutines assist. Heap growth is seen too:
/// with symbols, exactly what tracefs' own uprobe on
/// `runtime.(*pageAlloc).grow` (its `size` from RCX) saw. (The runtime's
/// heap memory classes are no truth for it: GC work buffers, 32 KiB spans
/// of the heap, are counted as metadata.)
#[rstest]
fn assists_are_timed(
    #[values("go1.22.12", "go1.23.12", "go1.24.13", "go1.25.14", "go1.26.11", "go1.27.4")] release: &'static str,
    #[values(Variant::Plain, Variant::Stripped)] variant: Variant,
) {
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = fixture_bin(Toolchain::Release(release), variant);
    let mut observer = Observer::start(&bin);
    let mut fixture = GoFixture::start(&fixture_bin, ASSIST_WORK, &[GCTRACE, ASSIST_GOGC]);
    let pid = fixture.pid;
    let line = observer.wait_for_stderr(&attached(pid), ATTACH_WITHIN);
    // From the agent's attach on, while the fixture waits: both count the same calls.
    let name = format!("pagealloc_grow_{}", std::process::id());
    let traced = (variant == Variant::Plain).then(|| {
        let offset = gofixture::function_offset(&fixture_bin, "runtime.(*pageAlloc).grow");
        let probe = UprobeEvent::new("obs_grow", &name, &fixture_bin, offset, "size=%cx:u64");
        (probe, Recorder::new("heap_grow", &[("obs_grow", &name)], 1024))
    });
    fixture.go();
    let finished = fixture.finish(RUN_WITHIN);
    let lines = traced.map(|(probe, recorder)| {
        let lines = recorder.stop();
        drop(probe);
        lines
    });
    let stopped = observer.stop();
    assert_eq!(stopped.lost, 0, "ring buffer losses");
    // entry probes + at least one return of gcAssistAlloc
    assert!(attached_probes(&line) >= 6, "{line}");
    let trace = gofixture::gctrace(&finished.stderr);
    let assist_ms: f64 = trace.iter().map(|t| t.assist_cpu_ms).sum();
    assert!(assist_ms > 0.0, "the fixture forced no assist (gctrace); stderr:\n{}", finished.stderr);
    let assists = events_of(&stopped, "go.assist", pid);
    assert!(!assists.is_empty(), "no go.assist events; gctrace assist CPU {assist_ms} ms");
    for a in &assists {
        assert!(u64_of(a, "duration_ns").is_some_and(|d| d > 0), "assist without a duration: {a}");
    }
    assert_eq!(gc_events(&stopped, pid).len(), trace.len(), "go.gc events vs gctrace lines");

    let grows = events_of(&stopped, "go.heap_grow", pid);
    assert!(!grows.is_empty(), "a 32 MiB live heap was built without a go.heap_grow event");
    let grown: Vec<u64> = grows.iter().map(|g| u64_of(g, "bytes").unwrap_or(0)).collect();
    let Some(lines) = lines else { return };
    let traced: Vec<u64> = lines
        .iter()
        .filter(|l| l.event == name && l.tgid == Some(pid))
        .map(|l| {
            l.text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("size=")?.parse().ok())
                .unwrap_or_else(|| panic!("no size= in {}", l.text))
        })
        .collect();
    assert_eq!(grown, traced, "go.heap_grow sizes vs tracefs' calls of pageAlloc.grow, in order");
}

/// Memory returned to the OS, against tracefs' own uprobe on the same
/// function (`runtime.sysUnusedOS`, its `n` fetched from RBX) over the same
/// process: every call is either counted in a `go.scavenge.summary` or is a
/// `go.scavenge` event of its own (only calls of 1 MiB and more, within the
/// kernel's budget), and calls and bytes of the two together equal
/// tracefs'. The run ends with `debug.FreeOSMemory()`, which returns whole
/// runs of pages (the large calls); what scavtrace printed is no more than
/// the total seen (work after its last line is printed only later).
#[rstest]
fn scavenging_is_counted_exactly(#[values("go1.22.12", "go1.27.4")] release: &'static str) {
    let args = [WORK, &["-free-os-memory"]].concat();
    let Some((finished, seen)) = scavenging_against_tracefs(release, &args, &[("GODEBUG", "gctrace=1,scavtrace=1")])
    else {
        return;
    };
    let scav = gofixture::scavtrace_kib(&finished.stderr);
    let forced: u64 = scav.iter().filter(|(_, _, forced)| *forced).map(|(_, eager, _)| eager << 10).sum();
    assert!(forced > 0, "FreeOSMemory released nothing; stderr:\n{}", finished.stderr);
    let printed: u64 = scav.iter().map(|(bg, eager, _)| (bg + eager) << 10).sum();
    assert!(seen >= printed, "go.scavenge bytes {seen} < scavtrace total {printed}");
}

/// Scavenging to stay under a tight `GOMEMLIMIT`: thousands of calls a
/// second, many of 1–4 MiB. The same exact account against tracefs, over a
/// run of several seconds (several summaries, the large calls past the
/// kernel's budget counted in them).
#[test]
fn scavenging_for_a_tight_memory_limit_is_counted_exactly() {
    let args = ["-wait-stdin", "-allocs", "400000", "-alloc-size", "65536", "-retain", "33554432"];
    scavenging_against_tracefs(NEWEST, &args, &[("GOMEMLIMIT", "48MiB")]);
}

/// Runs the fixture with `args` and `env` under the agent and a tracefs
/// uprobe on `runtime.sysUnusedOS`, asserts that the agent's summaries and
/// events account for every call and byte tracefs saw, and returns what the
/// fixture printed and the bytes seen; `None` when the test cannot run here.
fn scavenging_against_tracefs(
    release: &'static str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Option<(gofixture::Finished, u64)> {
    const EVENT_MIN: u64 = 1 << 20;
    let bin = require_root_and_bin()?;
    let fixture_bin = fixture_bin(Toolchain::Release(release), Variant::Plain);
    let offset = gofixture::function_offset(&fixture_bin, "runtime.sysUnusedOS");
    let mut observer = Observer::start(&bin);
    let mut fixture = GoFixture::start(&fixture_bin, args, env);
    let pid = fixture.pid;
    observer.wait_for_stderr(&attached(pid), ATTACH_WITHIN);
    // From the agent's attach on, while the fixture waits: both sides count the same calls.
    let name = format!("sysunused_{}", std::process::id());
    let probe = UprobeEvent::new("obs_scav", &name, &fixture_bin, offset, "n=%bx:u64");
    let recorder = Recorder::new("scavenge", &[("obs_scav", &name)], 8192);
    fixture.go();
    let finished = fixture.finish(RUN_WITHIN);
    let lines = recorder.stop();
    drop(recorder);
    drop(probe);
    let stopped = observer.stop();
    assert_eq!(stopped.lost, 0, "ring buffer losses");

    let calls: Vec<u64> = lines
        .iter()
        .filter(|l| l.event == name && l.tgid == Some(pid))
        .map(|l| {
            l.text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("n=")?.parse().ok())
                .unwrap_or_else(|| panic!("no n= in {}", l.text))
        })
        .collect();
    let large = calls.iter().filter(|&&n| n >= EVENT_MIN).count();
    let summaries = events_of(&stopped, "go.scavenge.summary", pid);
    let singles = events_of(&stopped, "go.scavenge", pid);
    let sum = |events: &[serde_json::Value], key: &str| -> u64 { events.iter().filter_map(|e| u64_of(e, key)).sum() };
    eprintln!(
        "{release} {env:?}: sysUnusedOS calls {} ({large} of 1 MiB or more), {} bytes; {} summaries of {} calls, {} events",
        calls.len(),
        calls.iter().sum::<u64>(),
        summaries.len(),
        sum(&summaries, "calls"),
        singles.len()
    );
    assert!(large > 0 && calls.len() > large, "both kinds of call ran: {calls:?}");
    assert_eq!(sum(&summaries, "calls") + singles.len() as u64, calls.len() as u64, "calls vs tracefs; {summaries:?}");
    assert_eq!(sum(&summaries, "bytes") + sum(&singles, "bytes"), calls.iter().sum::<u64>(), "bytes vs tracefs");
    assert!(!singles.is_empty() && singles.len() <= large, "{} events for {large} large calls", singles.len());
    for e in &singles {
        assert!(u64_of(e, "bytes").is_some_and(|b| b >= EVENT_MIN), "an event for a small call: {e}");
    }
    // Each summary adds to the running totals, in time order.
    let mut total = 0;
    for s in &summaries {
        total += u64_of(s, "calls").unwrap_or(0);
        assert_eq!(u64_of(s, "total_calls"), Some(total), "running total in {s}");
        assert!(u64_of(s, "calls").is_some_and(|c| c > 0), "a summary without calls: {s}");
    }
    assert_process_named(&summaries);
    Some((finished, sum(&summaries, "bytes") + sum(&singles, "bytes")))
}

/// One `go.attach` per process: its binary, Go version and layout, and the
/// GOGC, GOMEMLIMIT and GODEBUG it was started with, next to what its
/// `go.gc` events say is in effect. A process started without them has none
/// (as read: the environment was read whole).
#[test]
fn attach_record_has_the_memory_settings() {
    const GODEBUG: &str = "gctrace=1,madvdontneed=1";
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = fixture_bin(Toolchain::Release(NEWEST), Variant::Plain);
    let mut observer = Observer::start(&bin);
    let env = [("GODEBUG", GODEBUG), ("GOGC", "150"), ("GOMEMLIMIT", "6GiB")];
    let set = GoFixture::start(&fixture_bin, WORK, &env);
    let set_pid = set.pid;
    let (_, set_finished) = run_watched(&mut observer, set);
    let plain = GoFixture::start(&fixture_bin, WORK, &[]);
    let plain_pid = plain.pid;
    run_watched(&mut observer, plain);
    let stopped = observer.stop();

    let attach = events_of(&stopped, "go.attach", set_pid);
    assert_eq!(attach.len(), 1, "one go.attach for the process: {attach:?}");
    let a = &attach[0];
    assert_eq!(a["environ"], "read", "{a}");
    assert_eq!(
        (&a["env_gogc"], &a["env_gomemlimit"], &a["env_godebug"]),
        (&"150".into(), &"6GiB".into(), &GODEBUG.into())
    );
    let exe = std::fs::canonicalize(&fixture_bin).unwrap();
    assert_eq!(a["executable"].as_str(), exe.to_str(), "{a}");
    assert_eq!((a["go_version"].as_str(), a["layout"].as_str()), (Some(NEWEST), Some("dwarf")), "{a}");
    assert!(u64_of(a, "probes").is_some_and(|p| p >= 5), "{a}");
    let name = exe.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(a["comm"].as_str(), name.get(..15).or(Some(&name)), "the kernel's comm: 15 bytes; {a}");
    assert_process_named(&attach);
    // What the runtime made of them.
    let gcs = gc_events(&stopped, set_pid);
    assert_same_cycles(&gcs, &gctrace_cycles(&set_finished.stderr), &set_finished.stderr);
    assert_figures_match(&gcs, &gofixture::gctrace(&set_finished.stderr), 150, 6 << 30, &set_finished.stderr);

    let attach = events_of(&stopped, "go.attach", plain_pid);
    assert_eq!(attach.len(), 1, "one go.attach for the process: {attach:?}");
    let a = &attach[0];
    assert_eq!(a["environ"], "read", "{a}");
    // The test's own environment, which the fixture inherits.
    for (key, var) in [("env_gogc", "GOGC"), ("env_gomemlimit", "GOMEMLIMIT"), ("env_godebug", "GODEBUG")] {
        assert_eq!(a[key].as_str().map(str::to_string), std::env::var(var).ok(), "{key} in {a}");
    }
}
