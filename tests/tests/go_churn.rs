//! Process churn: while the agent runs, hundreds of short-lived Go fixture
//! processes start and end (a few at a time; some exit, some are killed).
//! Afterwards the agent holds exactly what it held before: the same BPF
//! links, the same open descriptors, the same `GO_PROCS` entries. Every
//! process that lived long enough was attached, and each attach has its
//! detach.
//!
//! The fixture runs under a name of its own, selected with `--go-process`,
//! so Go programs of other users of the machine (a `go build`) are left
//! alone and cannot move the counts.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use observer_e2e::gofixture::{self, Toolchain, Variant};
use observer_e2e::held::{held, held_settles_to};
use observer_e2e::observer::Observer;
use observer_e2e::require::{require_path, require_root_and_bin};

/// Processes started in all.
const CHURN: usize = 200;
/// Running at the same time.
const AT_ONCE: usize = 4;
/// The fixture's name here, and so its comm.
const COMM: &str = "churnfixture";
const MAPS: &[&str] = &["GO_PROCS"];
/// A process that lived this long must have been attached (the agent
/// attaches within a second; the margin is for a machine busy with other
/// work, which can hold the agent off the CPU for a while).
const LONG_ENOUGH: Duration = Duration::from_secs(3);
/// For the agent to let go of the last ones: a missed exit waits for the
/// next `/proc` rescan (every few seconds), the binary's probes are kept a
/// couple of seconds for a next process, and the kernel removes uprobes one
/// at a time (0.1 s each on a busy machine). Generous: a deadline, not a timing.
const SETTLE_WITHIN: Duration = Duration::from_secs(120);

/// One churn process: how it ran and how long it lived.
struct Run {
    pid: u32,
    killed: bool,
    lived: Duration,
}

struct Running {
    child: Child,
    started: Instant,
    /// Killed (SIGKILL, our own child) at this age; `None`: exits by itself.
    kill_at: Option<Duration>,
}

/// The `i`th process's `-duration`, and when it is killed: a quarter live
/// past [`LONG_ENOUGH`], half are brief, a quarter would run long and are
/// killed early.
fn plan(i: usize) -> (&'static str, Option<Duration>) {
    match i % 4 {
        0 => ("3300ms", None),
        1 | 2 => ("200ms", None),
        _ => ("60s", Some(Duration::from_millis(500))),
    }
}

/// Runs [`CHURN`] processes of `bin`, [`AT_ONCE`] at a time.
fn churn(bin: &Path) -> Vec<Run> {
    let mut started = 0;
    let mut running: Vec<Running> = Vec::new();
    let mut done = Vec::with_capacity(CHURN);
    let deadline = Instant::now() + Duration::from_secs(300);
    while done.len() < CHURN {
        assert!(Instant::now() < deadline, "churn still running after 300 s");
        while running.len() < AT_ONCE && started < CHURN {
            let (duration, kill_at) = plan(started);
            let child = Command::new(bin)
                .args(["-duration", duration, "-allocs", "500", "-settle", "0s"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
            running.push(Running { child, started: Instant::now(), kill_at });
            started += 1;
        }
        let mut i = 0;
        while i < running.len() {
            let r = &mut running[i];
            if r.kill_at.is_some_and(|at| r.started.elapsed() >= at) {
                // Our own child, not yet reaped: the pid is still its own.
                let _ = r.child.kill();
                r.kill_at = None;
            }
            match r.child.try_wait() {
                Ok(Some(status)) => {
                    let r = running.swap_remove(i);
                    let killed = status.code().is_none();
                    assert!(killed || status.success(), "churn fixture pid {} exited with {status}", r.child.id());
                    done.push(Run { pid: r.child.id(), killed, lived: r.started.elapsed() });
                }
                Ok(None) => i += 1,
                Err(e) => panic!("waiting for pid {}: {e}", r.child.id()),
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done
}

/// Pids of the agent's `observer: go: <what> pid=N` lines, with how often.
fn pids(stderr: &[String], what: &str) -> HashMap<u32, usize> {
    let prefix = format!("observer: go: {what} pid=");
    let mut seen = HashMap::new();
    for line in stderr {
        let Some(rest) = line.find(&prefix).map(|at| &line[at + prefix.len()..]) else { continue };
        let pid = rest.split_whitespace().next().and_then(|p| p.parse().ok());
        *seen.entry(pid.unwrap_or_else(|| panic!("no pid in {line:?}"))).or_default() += 1;
    }
    seen
}

/// The agent's lines that name one of `pids`.
fn said_of(stderr: &[String], pids: &[u32]) -> String {
    let named = |l: &String| {
        pids.iter().any(|p| {
            [format!("pid={p} "), format!("pid {p}:"), format!("pid {p} ")]
                .iter()
                .any(|n| l.contains(n) || l.ends_with(n.trim_end()))
        })
    };
    stderr.iter().filter(|l| named(l)).cloned().collect::<Vec<_>>().join("\n")
}

#[test]
fn probes_maps_and_descriptors_return_to_baseline_after_churn() {
    let Some(bin) = require_root_and_bin() else { return };
    if require_path(Path::new("/usr/sbin/bpftool"), "apt-get install bpftool; `cargo xtask setup` does").is_none() {
        return;
    }
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gofixtures");
    let built = gofixture::build(&cache, Toolchain::Release("go1.27.4"), Variant::Plain);
    let dir = tempfile::tempdir().expect("temporary directory");
    let fixture = dir.path().join(COMM);
    std::fs::copy(&built, &fixture).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));

    let observer = Observer::start_with(&bin, &["--go-process", COMM]);
    let agent = observer.pid();
    let baseline = held(agent, MAPS);
    let runs = churn(&fixture);
    let churned = Instant::now();
    let after = held_settles_to(agent, MAPS, &baseline, SETTLE_WITHIN);
    let settled = churned.elapsed();
    let stopped = observer.stop();

    let attached = pids(&stopped.stderr, "attached");
    let detached = pids(&stopped.stderr, "detached");
    let ours: HashSet<u32> = runs.iter().map(|r| r.pid).collect();
    let long: Vec<&Run> = runs.iter().filter(|r| r.lived >= LONG_ENOUGH).collect();
    let missed: Vec<u32> = long.iter().filter(|r| !attached.contains_key(&r.pid)).map(|r| r.pid).collect();
    let short_attached = runs.iter().filter(|r| r.lived < LONG_ENOUGH && attached.contains_key(&r.pid)).count();
    eprintln!(
        "churn: {} processes ({} killed), {} lived >= {LONG_ENOUGH:?}; attached {} ({short_attached} of the {} shorter ones), detached {}; held before {baseline:?}, after {after:?} ({settled:.1?} after the churn)",
        runs.len(),
        runs.iter().filter(|r| r.killed).count(),
        long.len(),
        attached.len(),
        runs.len() - long.len(),
        detached.len()
    );
    assert!(runs.len() >= 200 && long.len() >= CHURN / 8, "too few processes ran: {}", runs.len());
    assert_eq!(after, baseline, "what the agent holds after the churn vs before it");
    assert!(
        missed.is_empty(),
        "processes that lived >= {LONG_ENOUGH:?} but were never attached: {missed:?}; what the agent said of them:\n{}",
        said_of(&stopped.stderr, &missed)
    );
    let strangers: Vec<&u32> = attached.keys().filter(|p| !ours.contains(p)).collect();
    assert!(strangers.is_empty(), "--go-process {COMM} attached to other processes: {strangers:?}");
    assert!(attached.values().all(|&n| n == 1), "a process attached twice: {attached:?}");
    assert_eq!(attached, detached, "each attach has its detach");
    assert_eq!(stopped.lost, 0, "ring buffer losses");
}
