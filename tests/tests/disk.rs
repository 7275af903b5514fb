//! The output directory under its size budget (`--disk-budget`), with real
//! events: resets in a fresh network namespace, written to `events.jsonl`.
//!
//! - a small budget: files rotate, the oldest segments are removed, the
//!   directory never holds more than the budget, every file holds whole
//!   JSON lines, the newest resets are kept, and the stop line's `removed=`
//!   is the number of segments missing;
//! - a full disk (a 256 KiB tmpfs the test mounts, smaller than the budget): the
//!   agent runs on, stops writing, says why on its status and stop lines,
//!   counts the lines it did not write, and exits 0; the file holds whole
//!   lines only.

use std::path::{Path, PathBuf};
use std::process::Command;

use observer_e2e::episodes::{closed_port_burst, unique_service};
use observer_e2e::netns::Netns;
use observer_e2e::nstat::nstat;
use observer_e2e::observer::Observer;
use observer_e2e::require::require_root_and_bin;

const BUDGET: u64 = 256 << 10;
/// Resets per round; each is an event line of about 500 bytes.
const RESETS: usize = 200;

fn resetgen() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_resetgen"))
}

/// The budgeted files of `dir`: (name, sequence or None for a current file, size).
fn files(dir: &Path) -> Vec<(String, Option<u64>, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let size = e.metadata().ok()?.len();
            match name.rsplit_once('.') {
                Some((base, seq)) if seq.bytes().all(|b| b.is_ascii_digit()) && base.ends_with(".jsonl") => {
                    Some((base.to_string(), Some(seq.parse().ok()?), size))
                }
                _ if name.ends_with(".jsonl") => Some((name, None, size)),
                _ => None,
            }
        })
        .collect();
    out.sort();
    out
}

/// Every line of `path` parses as JSON (no line cut in the middle).
fn assert_whole_lines(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.is_empty() || text.ends_with('\n'), "{} ends mid-line", path.display());
    for (i, line) in text.lines().enumerate() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("{} line {}: {e}: {line:.120}", path.display(), i + 1));
    }
    text.lines().count()
}

fn field(summary: &str, key: &str) -> Option<u64> {
    summary.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{key}="))?.parse().ok())
}

#[test]
fn a_small_budget_rotates_and_removes_the_oldest_files() {
    let Some(bin) = require_root_and_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Small episodes (the spans past 10 per kind fold), so that one fits.
    let args = ["--disk-budget", &BUDGET.to_string(), "--episode-span-budget", "10"];
    let observer = Observer::start_in(&bin, dir.path(), &args);
    let ns = Netns::create();
    let service = unique_service("disk");
    let before = nstat(&ns, "TcpOutRsts");
    for _ in 0..5 {
        closed_port_burst(resetgen(), &ns, 9, RESETS, &service);
    }
    let sent = nstat(&ns, "TcpOutRsts") - before;
    assert_eq!(sent, 5 * RESETS as u64, "TcpOutRsts in {}", ns.name());
    let stopped = observer.stop();

    let on_disk = files(dir.path());
    let total: u64 = on_disk.iter().map(|(_, _, n)| n).sum();
    assert!(total <= BUDGET, "{total} bytes on disk over the {BUDGET} budget: {on_disk:?}");
    let seqs: Vec<u64> = on_disk.iter().filter_map(|(_, s, _)| *s).collect();
    assert!(!seqs.is_empty(), "nothing rotated: {on_disk:?}");
    // Oldest first: what is gone is every sequence below the oldest kept.
    let oldest = *seqs.iter().min().unwrap();
    let removed = field(&stopped.summary, "removed").expect("removed= on the stop line");
    assert!(removed > 0, "nothing removed: {}", stopped.summary);
    assert_eq!(removed, oldest, "removed= vs the rotated segments missing; {on_disk:?}; {}", stopped.summary);
    for (name, seq, _) in &on_disk {
        let path = match seq {
            Some(s) => dir.path().join(format!("{name}.{s}")),
            None => dir.path().join(name),
        };
        assert_whole_lines(&path);
    }
    // The newest resets are kept: the last sent reset of the namespace is
    // in the current events file.
    let ours: Vec<_> = stopped.tcp_resets().into_iter().filter(|r| r.netns == ns.inode()).collect();
    assert!(!ours.is_empty(), "no reset of {} in the current events.jsonl", ns.name());
    assert_eq!(field(&stopped.summary, "events_file_dropped"), Some(0), "{}", stopped.summary);
}

/// A tmpfs mounted over a directory of the test's, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "observer-test-full"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(ok.success(), "mount tmpfs on {}", dir.path().display());
        SmallFs { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_stops_the_writing_not_the_agent() {
    let Some(bin) = require_root_and_bin() else { return };
    let fs = SmallFs::mount("256k");
    let mut observer = Observer::start_in(&bin, &fs.path(), &[]);
    let ns = Netns::create();
    let service = unique_service("full");
    let before = nstat(&ns, "TcpOutRsts");
    closed_port_burst(resetgen(), &ns, 9, 3 * RESETS, &service);
    let status = observer.wait_for_stderr("disk_writes_stopped=", std::time::Duration::from_secs(30));
    assert!(status.contains("No space left on device"), "{status}");
    // Still running, still counting: the next burst is seen too.
    closed_port_burst(resetgen(), &ns, 9, RESETS, &service);
    let sent = nstat(&ns, "TcpOutRsts") - before;
    assert_eq!(sent, 4 * RESETS as u64, "TcpOutRsts in {}", ns.name());
    assert!(observer.is_running(), "the agent exited on a full disk");
    let stopped = observer.stop();
    assert!(stopped.summary.contains("disk_writes_stopped="), "{}", stopped.summary);
    let dropped = field(&stopped.summary, "events_file_dropped").expect("events_file_dropped=");
    assert!(dropped > 0, "lines not written are counted: {}", stopped.summary);
    let lines = assert_whole_lines(&fs.path().join("events.jsonl"));
    assert!(lines > 0, "nothing written before the disk filled");
}
