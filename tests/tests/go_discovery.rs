//! Finding Go processes: `--go-process` attaches to the selected ones only
//! (by pid, comm or main module), both those running when the agent starts
//! and those started later (seen from `sched:sched_process_exec`); and
//! processes are found whatever the state of their executable: deleted after
//! start, or only reachable through another mount namespace (a tmpfs mounted
//! in a namespace of its own, invisible from the agent's).
//!
//! Every process here is a copy of the fixture under a name of its own, so
//! comms differ and Go programs of other users of the machine (which the
//! module selector may also attach to) are told apart by pid.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use observer_e2e::gofixture::{self, GoFixture, Toolchain, Variant};
use observer_e2e::observer::Observer;
use observer_e2e::require::require_root_and_bin;
use rstest::rstest;
use tempfile::TempDir;

const ATTACH_WITHIN: Duration = Duration::from_secs(10);
const RUN_WITHIN: Duration = Duration::from_secs(60);
/// Waits for stdin, then a short run with a few forced cycles.
const WORK: &[&str] = &["-wait-stdin", "-allocs", "200", "-forced-gcs", "2"];
const MODULE: &str = "example.invalid/gofixture";
/// Always selected, started last: once it is attached, every exec before
/// it has been looked at.
const SENTINEL: &str = "fx-sentinel";

fn fixture(variant: Variant) -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gofixtures");
    gofixture::build(&cache, Toolchain::Release("go1.27.4"), variant)
}

/// `built` copied into `dir` as `name` (a file of its own: its own inode).
fn copy_as(built: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(built, &to).unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), to.display()));
    to
}

fn attached_line(pid: u32) -> String {
    format!("observer: go: attached pid={pid} ")
}

/// Pids of the agent's `observer: go: attached pid=N` lines.
fn attached_pids(stderr: &[String]) -> BTreeSet<u32> {
    let prefix = "observer: go: attached pid=";
    stderr
        .iter()
        .filter_map(|l| l.find(prefix).map(|at| &l[at + prefix.len()..]))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Lets `-wait-stdin` fixtures run to their end.
fn finish(fixtures: Vec<GoFixture>) {
    for mut f in fixtures {
        f.go();
        f.finish(RUN_WITHIN);
    }
}

#[derive(Debug, Clone, Copy)]
enum Select {
    /// The pid of the `fx-selected` process running before the agent.
    PidOfFirst,
    /// comm `fx-selected`.
    Comm,
    /// The fixture's module: every copy.
    Module,
    /// A module nothing here has.
    OtherModule,
}

/// Two processes run before the agent (`fx-selected`, `fx-other`), two start
/// after it (same names), then the sentinel. Which of them get probes:
/// (before: selected, other; after: selected, other).
#[rstest]
#[case::pid(Select::PidOfFirst, [true, false, false, false])]
#[case::comm(Select::Comm, [true, false, true, false])]
#[case::module(Select::Module, [true, true, true, true])]
#[case::other_module(Select::OtherModule, [false, false, false, false])]
fn only_selected_processes_are_attached(#[case] select: Select, #[case] expected: [bool; 4]) {
    let Some(bin) = require_root_and_bin() else { return };
    let built = fixture(Variant::Plain);
    let dir = TempDir::new().expect("temporary directory");
    let selected = copy_as(&built, dir.path(), "fx-selected");
    let other = copy_as(&built, dir.path(), "fx-other");
    let sentinel = copy_as(&built, dir.path(), SENTINEL);

    let mut fixtures = vec![GoFixture::start(&selected, WORK, &[]), GoFixture::start(&other, WORK, &[])];
    let value = match select {
        Select::PidOfFirst => fixtures[0].pid.to_string(),
        Select::Comm => "fx-selected".to_string(),
        Select::Module => MODULE.to_string(),
        Select::OtherModule => "example.invalid/other".to_string(),
    };
    let mut observer = Observer::start_with(&bin, &["--go-process", &value, "--go-process", SENTINEL]);
    fixtures.push(GoFixture::start(&selected, WORK, &[]));
    fixtures.push(GoFixture::start(&other, WORK, &[]));
    let last = GoFixture::start(&sentinel, WORK, &[]);
    observer.wait_for_stderr(&attached_line(last.pid), ATTACH_WITHIN);
    let pids: Vec<u32> = fixtures.iter().map(|f| f.pid).collect();
    fixtures.push(last);
    finish(fixtures);
    let stopped = observer.stop();

    let attached = attached_pids(&stopped.stderr);
    let got: Vec<bool> = pids.iter().map(|p| attached.contains(p)).collect();
    assert_eq!(
        got,
        expected,
        "--go-process {value}: attached to (before: fx-selected, fx-other; after: fx-selected, fx-other) {pids:?}; agent:\n{}",
        stopped.stderr.join("\n")
    );
}

/// The ready line names the selection; a bad value is one usage error.
#[test]
fn bad_selector_is_a_usage_error() {
    let Some(bin) = observer_e2e::require::require_bin() else { return };
    let out = observer_e2e::command::output_within(
        std::process::Command::new(&bin).args(["run", "--go-process", "this-comm-is-too-long"]),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("this-comm-is-too-long") && stderr.contains("15 bytes"), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.contains("error")).count(), 1, "one error: {stderr}");
}

/// A fixture's executable deleted after it started (before the agent, and
/// after it), and a PIE fixture exec'd from a tmpfs that exists only in a
/// mount namespace of its own: all attached, and the PIE one's GC cycles
/// carry numbers (its load address was found through `/proc/PID/maps`).
#[test]
fn attaches_to_deleted_binaries_and_through_other_mount_namespaces() {
    let Some(bin) = require_root_and_bin() else { return };
    let plain = fixture(Variant::Plain);
    let pie = fixture(Variant::Pie);
    let dir = TempDir::new().expect("temporary directory");

    let early_bin = copy_as(&plain, dir.path(), "fx-deleted-1");
    let early = GoFixture::start(&early_bin, WORK, &[]);
    std::fs::remove_file(&early_bin).expect("deleting the running fixture's executable");

    let mut observer = Observer::start_with(&bin, &["--go-process", MODULE]);
    observer.wait_for_stderr(&attached_line(early.pid), ATTACH_WITHIN);

    let late_bin = copy_as(&plain, dir.path(), "fx-deleted-2");
    let late = GoFixture::start(&late_bin, WORK, &[]);
    std::fs::remove_file(&late_bin).expect("deleting the running fixture's executable");
    observer.wait_for_stderr(&attached_line(late.pid), ATTACH_WITHIN);

    // An empty directory here; a tmpfs holding the fixture in the namespace.
    let mnt = dir.path().join("private");
    std::fs::create_dir(&mnt).expect("mount point");
    let script = format!(
        "mount -t tmpfs observer-e2e {m} && cp {pie} {m}/fx-mntns && exec {m}/fx-mntns {work}",
        m = mnt.display(),
        pie = pie.display(),
        work = WORK.join(" ")
    );
    let unshare = Path::new("/usr/bin/unshare");
    let hidden = GoFixture::start(unshare, &["--mount", "--propagation", "private", "sh", "-c", &script], &[]);
    let line = observer.wait_for_stderr(&attached_line(hidden.pid), ATTACH_WITHIN);
    assert!(
        std::fs::read_dir(&mnt).map(|mut d| d.next().is_none()).unwrap_or(false),
        "the fixture's tmpfs is visible outside its namespace"
    );
    assert!(line.contains(&format!("module={MODULE} ")) && line.contains("layout=dwarf"), "{line}");

    let hidden_pid = hidden.pid;
    finish(vec![early, late, hidden]);
    let stopped = observer.stop();
    let cycles: Vec<&serde_json::Value> =
        stopped.events.iter().filter(|e| e["kind"] == "go.gc" && e["pid"] == hidden_pid).collect();
    assert!(!cycles.is_empty(), "no go.gc event of the PIE fixture in its own mount namespace");
    assert!(cycles.iter().all(|e| e["cycle"].is_u64()), "cycle numbers of the PIE fixture: {cycles:?}");
}
