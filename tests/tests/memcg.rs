//! Memory-cgroup signals against the kernel's own counts.
//!
//! On a host without a cgroup v2 memory controller (this build machine: the
//! memory controller is on cgroup v1) the agent must still start, say the
//! memcg signals are unavailable and keep reporting resets. With the
//! controller (inside `cargo xtask vm-test`'s VMs) the tests create their own
//! cgroups under the cgroup2 root, run a workload in them and compare the
//! agent's events with the kernel's own counts. Under `memory.high` the
//! workload is the Go fixture (a Go service's heap growing past the limit,
//! on several threads); under `memory.max`, where it only has to die, a tiny
//! allocator (`dd` with one big buffer: it allocates and touches `bs`
//! bytes). They never create a cgroup where the cgroup2 root lacks the
//! memory controller.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use observer_e2e::cgroup::{memory_root, require_memory_root};
use observer_e2e::gofixture::{self, GoFixture};
use observer_e2e::observer::{Observer, Stopped};
use observer_e2e::require::require_root_and_bin;
use observer_e2e::tracefs::{KprobeEvent, Recorder, TraceLine};

/// Figures for the log even when the test passes (libtest captures `eprintln!`).
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
use serde_json::Value;

/// A cgroup this test created; removed on drop.
struct TestCgroup {
    dir: PathBuf,
    rel: String,
}

impl TestCgroup {
    fn create(root: &Path, name: &str, settings: &[(&str, &str)]) -> TestCgroup {
        // Only reached with the memory controller on the cgroup2 root (in the VM).
        let subtree = std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
        if !subtree.split_whitespace().any(|c| c == "memory") {
            std::fs::write(root.join("cgroup.subtree_control"), "+memory")
                .expect("enable memory in the root's subtree");
        }
        let rel = format!("/observer-test-{}-{name}", std::process::id());
        let dir = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cg = TestCgroup { dir, rel };
        cg.set(settings);
        cg
    }

    /// A child cgroup (the memory controller enabled for this one's children).
    fn child(&self, name: &str, settings: &[(&str, &str)]) -> TestCgroup {
        std::fs::write(self.dir.join("cgroup.subtree_control"), "+memory").expect("enable memory for children");
        let rel = format!("{}/{name}", self.rel);
        let dir = self.dir.join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cg = TestCgroup { dir, rel };
        cg.set(settings);
        cg
    }

    fn set(&self, settings: &[(&str, &str)]) {
        for (file, value) in settings {
            let path = self.dir.join(file);
            // memory.swap.max is absent without swap accounting: nothing to limit then.
            if path.exists() {
                std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
            }
        }
    }

    fn events(&self) -> Counts {
        let text = std::fs::read_to_string(self.dir.join("memory.events")).expect("read memory.events");
        Counts::parse(&text)
    }

    fn events_local(&self) -> Counts {
        let text = std::fs::read_to_string(self.dir.join("memory.events.local")).expect("read memory.events.local");
        Counts::parse(&text)
    }

    /// `memory.stat` `pgsteal` and `pgscan`: pages taken off (scanned on)
    /// this cgroup's LRU lists by any reclaim.
    fn stat(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(self.dir.join("memory.stat")).expect("read memory.stat");
        let get =
            |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse::<u64>().ok());
        let sum = |what: &str| {
            get(what).unwrap_or_else(|| {
                get(&format!("{what}_direct")).unwrap_or(0) + get(&format!("{what}_kswapd")).unwrap_or(0)
            })
        };
        (sum("pgsteal"), sum("pgscan"))
    }

    /// `some` and `full` totals of `memory.pressure`, microseconds.
    fn pressure(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(self.dir.join("memory.pressure")).expect("read memory.pressure");
        let total = |kind: &str| {
            text.lines()
                .filter(|l| l.starts_with(kind))
                .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("total=")?.parse().ok()))
                .unwrap_or(0)
        };
        (total("some "), total("full "))
    }

    /// Moves process `pid` (every thread of it) into this cgroup.
    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move pid {pid} into {}: {e}", self.dir.display()));
    }

    /// Runs `dd` allocating and touching `bytes` in this cgroup; its pid and exit.
    fn run_dd(&self, mib: u32) -> (u32, std::process::ExitStatus) {
        let procs = self.dir.join("cgroup.procs");
        let script = format!("echo $$ > {} && exec dd if=/dev/zero of=/dev/null bs={mib}M count=1", procs.display());
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        let status = child.wait().expect("wait for dd");
        (pid, status)
    }
}

/// The Go fixture (see `gofixture::host_built_or_build`).
fn go_fixture() -> PathBuf {
    gofixture::host_built_or_build(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("gofixtures"))
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Killed tasks can linger a moment after they were reaped.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        report!("could not remove {}", self.dir.display());
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    high: u64,
    max: u64,
    oom: u64,
    oom_kill: u64,
    /// `None` where the file has no such line (before 5.16: 5.10).
    oom_group_kill: Option<u64>,
}

impl Counts {
    fn parse(text: &str) -> Counts {
        let mut c = Counts::default();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(k), Some(v)) = (parts.next(), parts.next().and_then(|v| v.parse().ok())) else { continue };
            match k {
                "high" => c.high = v,
                "max" => c.max = v,
                "oom" => c.oom = v,
                "oom_kill" => c.oom_kill = v,
                "oom_group_kill" => c.oom_group_kill = Some(v),
                _ => {}
            }
        }
        c
    }

    fn since(self, before: Counts) -> Counts {
        Counts {
            high: self.high - before.high,
            max: self.max - before.max,
            oom: self.oom - before.oom,
            oom_kill: self.oom_kill - before.oom_kill,
            oom_group_kill: self.oom_group_kill.zip(before.oom_group_kill).map(|(now, was)| now - was),
        }
    }
}

/// The agent's summed `memcg.events` deltas for one cgroup path.
fn summed_deltas(stopped: &Stopped, rel: &str) -> (Counts, usize) {
    let mut sum = Counts::default();
    let mut n = 0;
    for e in stopped.events.iter().filter(|e| e["kind"] == "memcg.events" && e["cgroup_path"] == rel) {
        let d = &e["delta"];
        let get = |k: &str| d[k].as_u64().unwrap_or_else(|| panic!("delta.{k} in {e}"));
        sum.high += get("high");
        sum.max += get("max");
        sum.oom += get("oom");
        sum.oom_kill += get("oom_kill");
        // null where the kernel's file has no such line: never a made-up 0.
        let group = d["oom_group_kill"].as_u64();
        sum.oom_group_kill = match (n, sum.oom_group_kill, group) {
            (0, _, g) => g,
            (_, Some(s), Some(g)) => Some(s + g),
            (_, None, None) => None,
            (_, s, g) => panic!("oom_group_kill {s:?} then {g:?} for one cgroup: {e}"),
        };
        n += 1;
    }
    (sum, n)
}

#[test]
fn without_memory_controller_run_reports_memcg_unavailable_and_resets_still_work() {
    let Some(bin) = require_root_and_bin() else { return };
    let Err(reason) = memory_root() else {
        report!("SKIPPED: this host has a cgroup v2 memory controller (the VM tests below cover it)");
        return;
    };
    let mut observer = Observer::start(&bin);
    let warning = observer.wait_for_stderr("memcg.high unavailable", Duration::from_secs(5));
    assert!(warning.contains("unavailable") && warning.contains("no cgroup"), "{warning} (expected: {reason})");
    // A reset on loopback: a connect to a port nobody listens on any more.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind").local_addr().expect("addr").port();
    let err = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).expect_err("connect to a closed port");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    std::thread::sleep(Duration::from_millis(300));
    let stopped = observer.stop();
    let ours = stopped.tcp_resets().into_iter().filter(|r| r.direction == "sent" && r.local_port == port).count();
    assert_eq!(ours, 1, "resets to port {port}; stderr:\n{}", stopped.stderr.join("\n"));
    let ready = stopped.stderr.iter().find(|l| l.contains("observer: ready")).expect("ready line");
    assert!(ready.contains("memcg: unavailable"), "{ready}");
    // Every memcg signal but OOM kills (a tracepoint that works on cgroup v1
    // too) says it is unavailable, and why.
    for signal in ["memcg.high", "memcg.max", "memcg.pressure", "memcg.throttle", "memcg.reclaim"] {
        let said = format!("{signal} unavailable: ");
        let lines: Vec<&String> = stopped.stderr.iter().filter(|l| l.contains(&said)).collect();
        assert_eq!(lines.len(), 1, "want one warning {said:?}; stderr:\n{}", stopped.stderr.join("\n"));
        assert!(lines[0].contains("no cgroup"), "{}", lines[0]);
    }
    let memcg_events = stopped
        .events
        .iter()
        .filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("memcg.") && k != "memcg.oom_kill"));
    assert_eq!(memcg_events.count(), 0, "memcg events on a host without the controller");
}

/// The Go fixture's work under `memory.high`: a pointer-rich live heap of
/// twice the limit, built as soon as it is let go.
const GO_OVER_HIGH: &[&str] = &["-wait-stdin", "-live-mb", "16", "-settle", "0s"];
/// Trace marks around the fixture's move into its cgroup.
const MOVING: &str = "observer-test: moving the fixture";
const MOVED: &str = "observer-test: fixture moved";

/// One agent per throttle mechanism (and per memory.events / PSI / reclaim
/// mechanism), all watching the same workload in a nested tree: `tree` (no
/// limit) holds `tree/hog` (memory.high=8M) where the Go fixture builds a
/// 16 MiB heap. The `kprobe` agent has the `stat` reclaim mechanism forced,
/// the others the tracepoints.
#[test]
fn memory_high_signals_match_the_kernels_counts() {
    let Some(bin) = require_root_and_bin() else { return };
    let Some(root) = require_memory_root() else { return };
    let agents: Vec<(&str, Observer)> = [
        ("fentry", ["--memcg-mechanism", "inotify", "--memcg-throttle", "fentry", "--memcg-pressure", "trigger"]),
        ("kprobe", ["--memcg-mechanism", "poll", "--memcg-throttle", "kprobe", "--memcg-pressure", "poll"]),
        ("vmscan", ["--memcg-mechanism", "inotify", "--memcg-throttle", "vmscan", "--memcg-pressure", "trigger"]),
    ]
    .into_iter()
    .map(|(name, args)| {
        let reclaim = if name == "kprobe" { "stat" } else { "tracepoint" };
        let args: Vec<&str> = args.into_iter().chain(["--memcg-reclaim", reclaim]).collect();
        (name, Observer::start_with(&bin, &args))
    })
    .collect();
    let tree = TestCgroup::create(&root, "tree", &[]);
    let hog = tree.child("hog", &[("memory.high", "8M"), ("memory.swap.max", "0")]);
    // tracefs' own counts: entries to the throttle function, reclaim run ends,
    // by the fixture's threads. Recorded from before the fixture starts, with
    // marks around its move into the cgroup: what its threads did after the
    // move is what the agents count in the cgroup.
    let group = format!("obs{}", std::process::id());
    let probe = KprobeEvent::new(&group, "over_high", "mem_cgroup_handle_over_high");
    let recorder = Recorder::new("memcg", &[(&group, "over_high"), ("vmscan", "mm_vmscan_memcg_reclaim_end")], 4096);
    let mut fixture = GoFixture::start(&go_fixture(), GO_OVER_HIGH, &[]);
    let pid = fixture.pid;
    recorder.mark(MOVING);
    hog.add(pid);
    recorder.mark(MOVED);
    let before = (hog.events(), hog.events_local(), tree.events(), tree.events_local(), hog.stat(), tree.stat());
    fixture.go();
    fixture.finish(Duration::from_secs(300));
    let lines = recorder.stop();
    let hog_delta = hog.events().since(before.0);
    let hog_local = hog.events_local().since(before.1);
    let tree_delta = tree.events().since(before.2);
    let tree_local = tree.events_local().since(before.3);
    let (hog_stat, tree_stat) = (hog.stat(), tree.stat());
    let pgsteal = hog_stat.0 - before.4.0;
    let pgscan = hog_stat.1 - before.4.1;
    let tree_stat = (tree_stat.0 - before.5.0, tree_stat.1 - before.5.1);
    let stopped: Vec<(&str, Stopped)> = agents.into_iter().map(|(n, o)| (n, o.stop())).collect();
    // Read right after the agents' last read (the workload is gone: the totals no longer move).
    let psi = hog.pressure();
    let (probe_hits, probe_missed) = probe.profile();
    drop(probe);
    let counted = |l: &&TraceLine| l.event != "tracing_mark_write";
    let unattributed: Vec<&str> =
        lines.iter().filter(counted).filter(|l| l.tgid.is_none()).map(|l| l.text.as_str()).collect();
    assert!(unattributed.is_empty(), "trace lines without their thread's process: {unattributed:?}");
    let mark = |text: &str| {
        lines
            .iter()
            .position(|l| l.event == "tracing_mark_write" && l.text.trim_end().ends_with(text))
            .unwrap_or_else(|| panic!("no {text} mark in the trace"))
    };
    let (moving, moved) = (mark(MOVING), mark(MOVED));
    let fixtures = |range: &[TraceLine]| -> Vec<TraceLine> {
        range.iter().filter(counted).filter(|l| l.tgid == Some(pid)).cloned().collect()
    };
    // An entry while the move runs counts in either cgroup, by a hair: those
    // widen the truth to a range (none in most runs, one in a few).
    let during_move = fixtures(&lines[moving..moved]);
    assert!(during_move.iter().all(|l| l.event == "over_high"), "reclaim while the fixture moved: {during_move:?}");
    let unsure = during_move.len();
    report!(
        "the fixture's threads entered mem_cgroup_handle_over_high {} times before their move into the cgroup, \
         {unsure} during it",
        fixtures(&lines[..moving]).len()
    );
    let lines = fixtures(&lines[moved..]);
    let traced = |event: &str| lines.iter().filter(|l| l.event == event).count();
    let threads: std::collections::BTreeSet<u32> = lines.iter().map(|l| l.tid).collect();
    let (entries, reclaim_ends) = (traced("over_high"), traced("mm_vmscan_memcg_reclaim_end"));
    report!("kprobe_profile: {probe_hits} hits, {probe_missed} missed (all tasks)");
    report!(
        "Go fixture pid {pid} ({} threads in the trace): memory.events high+{} (local +{}), parent high+{} (local +{}); \
         tracefs: {entries} entries to mem_cgroup_handle_over_high, {reclaim_ends} memcg reclaim ends; memory.stat \
         pgsteal +{pgsteal} pgscan +{pgscan} (parent +{}/+{}); \
         memory.pressure some={} full={} us",
        threads.len(),
        hog_delta.high,
        hog_local.high,
        tree_delta.high,
        tree_local.high,
        tree_stat.0,
        tree_stat.1,
        psi.0,
        psi.1
    );
    assert!(hog_delta.high > 0, "the workload never went over memory.high: {hog_delta:?}");
    assert!(entries > 0 && reclaim_ends > 0, "tracefs saw {entries} entries, {reclaim_ends} reclaim ends");
    // Nested: the hog's own counts are its hierarchical ones; the parent's
    // hierarchical file carries them, its local file none of them.
    assert_eq!(hog_local, hog_delta, "a leaf's memory.events.local vs memory.events");
    // (a zero oom_group_kill where the kernel's file has that line)
    let none = Counts { oom_group_kill: tree_local.oom_group_kill.map(|_| 0), ..Counts::default() };
    assert_eq!(tree_local, none, "the parent's own (local) events");
    assert_eq!(tree_delta.high, hog_delta.high, "the parent's hierarchical high");
    for (name, s) in &stopped {
        let ready = s.stderr.iter().find(|l| l.contains("observer: ready")).expect("ready line");
        report!("{name}: {ready}");
        // memory.events, per cgroup of the tree.
        let (seen, n) = summed_deltas(s, &hog.rel);
        report!("{name}: {n} memcg.events for {}, summed {seen:?}", hog.rel);
        assert_eq!(seen, hog_delta, "{name}: summed memcg.events deltas of the leaf vs its memory.events");
        assert_eq!(summed_deltas(s, &tree.rel).0, tree_delta, "{name}: the parent's memcg.events vs its memory.events");
        // Throttling.
        let of = |kind: &str, path: &str| -> Vec<&Value> {
            s.events.iter().filter(|e| e["kind"] == kind && e["cgroup_path"] == path).collect()
        };
        let throttles = of("memcg.throttle", &hog.rel);
        assert!(of("memcg.throttle", &tree.rel).is_empty(), "{name}: throttles attributed to the parent");
        assert!(of("memcg.reclaim", &tree.rel).is_empty(), "{name}: reclaims attributed to the parent");
        for t in &throttles {
            assert_eq!(t["pid"], pid, "{name}: a throttled task of the leaf that is not the fixture: {t}");
        }
        if ready.contains("throttle: unavailable") {
            report!("SKIPPED: {name} throttle mechanism unavailable on this kernel ({ready})");
        } else {
            let mechanism = throttles.first().map(|t| t["mechanism"].clone());
            assert_eq!(mechanism, Some(Value::from(*name)), "{name}: throttle events {}", throttles.len());
            let idle: u64 = of("memcg.throttle.idle", &hog.rel).iter().map(|e| e["count"].as_u64().unwrap_or(0)).sum();
            let pages: u64 = throttles.iter().filter_map(|t| t["nr_pages"].as_u64()).sum();
            let took: u64 = throttles.iter().filter_map(|t| t["duration_ns"].as_u64()).sum();
            report!(
                "{name}: {} throttle events ({pages} pages over, {} ms) + {idle} idle entries; tracefs entries {entries}, reclaim ends {reclaim_ends}",
                throttles.len(),
                took / 1_000_000
            );
            if *name == "vmscan" {
                assert_eq!(
                    throttles.len(),
                    reclaim_ends,
                    "{name}: inferred throttles vs tracefs reclaim ends of the fixture"
                );
            } else {
                let seen = throttles.len() + idle as usize;
                assert!(
                    (entries..=entries + unsure).contains(&seen),
                    "{name}: throttles + idle entries {seen} vs tracefs entries {entries} after the move (+{unsure} during it)"
                );
                assert!(throttles.iter().all(|t| t["nr_pages"].as_u64().is_some_and(|p| p > 0)), "{name}: nr_pages");
                assert_eq!(throttles[0]["memory_high"], 8 << 20, "{}", throttles[0]);
            }
        }
        // Reclaim.
        let reclaims = of("memcg.reclaim", &hog.rel);
        for r in &reclaims {
            assert_eq!(r["pid"], pid, "{name}: a reclaim in the leaf not by the fixture: {r}");
        }
        let reclaimed: u64 = reclaims.iter().map(|r| r["nr_reclaimed"].as_u64().expect("nr_reclaimed")).sum();
        report!(
            "{name}: {} reclaim events, {reclaimed} pages reclaimed; memory.stat pgsteal +{pgsteal}",
            reclaims.len()
        );
        // The `stat` mechanism: summed memory.stat deltas per cgroup.
        let stat_sums = |path: &str| {
            let events = of("memcg.reclaim.stat", path);
            let get = |k: &str| -> u64 {
                events.iter().map(|e| e["delta"][k].as_u64().unwrap_or_else(|| panic!("delta.{k} in {e}"))).sum()
            };
            (get("pgsteal"), get("pgscan"), events.len())
        };
        let (hog_sums, tree_sums) = (stat_sums(&hog.rel), stat_sums(&tree.rel));
        if *name == "kprobe" {
            assert!(ready.contains("reclaim: memory.stat deltas"), "{name}: {ready}");
            report!(
                "{name}: {} memcg.reclaim.stat for the leaf: pgsteal +{} pgscan +{} (memory.stat +{pgsteal} +{pgscan}); \
                 {} for the parent: +{} +{} (memory.stat +{} +{})",
                hog_sums.2,
                hog_sums.0,
                hog_sums.1,
                tree_sums.2,
                tree_sums.0,
                tree_sums.1,
                tree_stat.0,
                tree_stat.1
            );
            assert!(reclaims.is_empty(), "{name}: memcg.reclaim events with the stat mechanism");
            assert!(pgsteal > 0, "the workload never reclaimed: memory.stat pgsteal +0");
            assert_eq!((hog_sums.0, hog_sums.1), (pgsteal, pgscan), "{name}: leaf pgsteal/pgscan vs memory.stat");
            assert_eq!((tree_sums.0, tree_sums.1), tree_stat, "{name}: parent pgsteal/pgscan vs memory.stat");
            assert!(
                of("memcg.reclaim.stat", &hog.rel).iter().all(|e| e["mechanism"] == "memory.stat"),
                "{name}: reclaim mechanism"
            );
        } else {
            assert!(ready.contains("reclaim: vmscan tracepoints"), "{name}: {ready}");
            assert_eq!(hog_sums.2, 0, "{name}: memcg.reclaim.stat with the tracepoint mechanism");
            assert_eq!(reclaims.len(), reclaim_ends, "{name}: reclaim events vs tracefs reclaim ends of the fixture");
        }
        // PSI.
        let pressure = of("memcg.pressure", &hog.rel);
        let last = pressure.last().unwrap_or_else(|| panic!("{name}: no memcg.pressure for {}", hog.rel));
        let (some, full) = (last["some_total_us"].as_u64().unwrap_or(0), last["full_total_us"].as_u64().unwrap_or(0));
        report!(
            "{name}: {} memcg.pressure events, last some={some} full={full} us; file some={} full={}",
            pressure.len(),
            psi.0,
            psi.1
        );
        assert!(
            within_1_percent(some, psi.0) && within_1_percent(full, psi.1),
            "{name}: PSI totals {some}/{full} vs {psi:?}"
        );
        let wanted = if *name == "kprobe" { "poll" } else { "trigger" };
        assert!(pressure.iter().all(|p| p["mechanism"] == wanted), "{name}: pressure mechanism, want {wanted}");
    }
}

fn within_1_percent(seen: u64, truth: u64) -> bool {
    seen.abs_diff(truth) as f64 <= truth as f64 * 0.01
}

#[test]
fn oom_kills_are_reported_once_per_victim() {
    let Some(bin) = require_root_and_bin() else { return };
    let Some(root) = require_memory_root() else { return };
    let observer = Observer::start(&bin);
    let cg =
        TestCgroup::create(&root, "oom", &[("memory.max", "16M"), ("memory.swap.max", "0"), ("memory.oom.group", "0")]);
    let before = cg.events();
    let mut killed = Vec::new();
    for _ in 0..2 {
        let (pid, status) = cg.run_dd(64);
        assert_eq!(status.signal(), Some(9), "dd (pid {pid}) asking for 64 MB under memory.max=16M: {status}");
        killed.push(pid);
    }
    let delta = cg.events().since(before);
    let stopped = observer.stop();
    let kills: Vec<&Value> = stopped.events.iter().filter(|e| e["kind"] == "memcg.oom_kill").collect();
    report!("killed {killed:?}; memory.events delta {delta:?}; oom_kill events: {kills:?}");
    for pid in &killed {
        let mine: Vec<&&Value> = kills.iter().filter(|e| e["pid"] == *pid).collect();
        assert_eq!(mine.len(), 1, "oom_kill events for pid {pid}: {mine:?}");
        assert_eq!(mine[0]["cgroup_path"], cg.rel.as_str(), "{}", mine[0]);
        assert_eq!(mine[0]["comm"], "dd", "{}", mine[0]);
    }
    let in_cgroup = kills.iter().filter(|e| e["cgroup_path"] == cg.rel.as_str()).count();
    // memory.oom.group=0: each kill counts once in oom_kill.
    assert_eq!(in_cgroup as u64, delta.oom_kill, "oom_kill events vs memory.events oom_kill delta");
    assert_eq!(delta.oom_kill, killed.len() as u64, "{delta:?}");
    let (seen, _) = summed_deltas(&stopped, &cg.rel);
    assert_eq!(seen, delta, "memcg.events deltas vs memory.events");
}

/// memory.oom.group=1: the OOM killer kills every task of the cgroup; each
/// one is reported once. The file's counters are reported as read: a group
/// kill counts its victim twice in `oom_kill` (6.1 and 6.12), so they are
/// not equated with the deaths.
#[test]
fn oom_group_kill_reports_every_member_once() {
    let Some(bin) = require_root_and_bin() else { return };
    let Some(root) = require_memory_root() else { return };
    let observer = Observer::start(&bin);
    let cg = TestCgroup::create(
        &root,
        "oomgroup",
        &[("memory.max", "16M"), ("memory.swap.max", "0"), ("memory.oom.group", "1")],
    );
    let before = cg.events();
    let procs = cg.dir.join("cgroup.procs");
    let mut sleeper = Command::new("sh")
        .args(["-c", &format!("echo $$ > {} && exec sleep 300", procs.display())])
        .spawn()
        .expect("spawn the sleeper");
    let sleeper_pid = sleeper.id();
    for _ in 0..100 {
        let members = std::fs::read_to_string(&procs).unwrap_or_default();
        if members.lines().any(|l| l.trim() == sleeper_pid.to_string()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (dd_pid, status) = cg.run_dd(64);
    assert_eq!(status.signal(), Some(9), "dd (pid {dd_pid}) asking for 64 MB under memory.max=16M: {status}");
    let delta = cg.events().since(before);
    // The sleeper stays a zombie until the agent stopped: a victim that is not
    // the task the OOM killer ran in is looked up in /proc/PID/cgroup, which
    // a parent that reaps at once can win the race against (see oom.rs).
    let stopped = observer.stop();
    let sleeper_status = sleeper.wait().expect("wait for the sleeper");
    assert_eq!(sleeper_status.signal(), Some(9), "the sleeper (pid {sleeper_pid}) of the group: {sleeper_status}");
    let kills: Vec<&Value> = stopped.events.iter().filter(|e| e["kind"] == "memcg.oom_kill").collect();
    report!(
        "group kill of dd {dd_pid} and sleep {sleeper_pid}: memory.events oom+{} oom_kill+{} oom_group_kill+{:?}; {} oom_kill events",
        delta.oom,
        delta.oom_kill,
        delta.oom_group_kill,
        kills.len()
    );
    for (pid, comm) in [(dd_pid, "dd"), (sleeper_pid, "sleep")] {
        let mine: Vec<&&Value> = kills.iter().filter(|e| e["pid"] == pid).collect();
        assert_eq!(mine.len(), 1, "oom_kill events for {comm} (pid {pid}): {mine:?}");
        assert_eq!(mine[0]["cgroup_path"], cg.rel.as_str(), "{}", mine[0]);
    }
    assert_eq!(kills.iter().filter(|e| e["cgroup_path"] == cg.rel.as_str()).count(), 2, "{kills:?}");
    assert!(delta.oom >= 1, "{delta:?}");
    match delta.oom_group_kill {
        Some(n) => assert!(n >= 1, "{delta:?}"),
        // 5.10: the kill is seen all the same; the agent says the count is unknown.
        None => report!("memory.events has no oom_group_kill line on this kernel: reported as null"),
    }
    let (seen, _) = summed_deltas(&stopped, &cg.rel);
    assert_eq!(seen, delta, "memcg.events deltas vs memory.events");
}
