//! Memory-cgroup signals against the kernel's own counts.
//!
//! On a host without a cgroup v2 memory controller (this build machine: the
//! memory controller is on cgroup v1) the agent must still start, say the
//! memcg signals are unavailable and keep reporting resets. With the
//! controller (inside `cargo xtask vm-test`'s VMs) the tests create their own
//! cgroups under the cgroup2 root, run a tiny allocator (`dd` with one big
//! buffer: it allocates and touches `bs` bytes) in them, and compare the
//! agent's events with that cgroup's `memory.events`. They never create a
//! cgroup where the cgroup2 root lacks the memory controller.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use observer_e2e::cgroup::cgroup2_mount_in;
use observer_e2e::observer::{Observer, Stopped};
use observer_e2e::require::require_root_and_bin;
use serde_json::Value;

/// The cgroup2 root when it has the memory controller, else why not.
fn memory_root() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let root = cgroup2_mount_in(&mountinfo).ok_or("no cgroup2 mount")?;
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        Ok(root)
    } else {
        Err(format!("no cgroup v2 memory controller at {}", root.display()))
    }
}

/// The root for the VM tests, or `None` after saying why they are skipped.
/// A kernel without the controller is a fact of the host, not a missing
/// prerequisite, so this skips even under `OBSERVER_E2E_REQUIRED=1`.
fn require_memory_root() -> Option<PathBuf> {
    match memory_root() {
        Ok(root) => Some(root),
        Err(reason) => {
            let test = std::thread::current().name().unwrap_or("?").to_string();
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: {reason} ({test})");
            None
        }
    }
}

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
            std::fs::write(root.join("cgroup.subtree_control"), "+memory").expect("enable memory in the root's subtree");
        }
        let rel = format!("/observer-test-{}-{name}", std::process::id());
        let dir = root.join(rel.trim_start_matches('/'));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cg = TestCgroup { dir, rel };
        for (file, value) in settings {
            let path = cg.dir.join(file);
            // memory.swap.max is absent without swap accounting: nothing to limit then.
            if path.exists() {
                std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
            }
        }
        cg
    }

    fn events(&self) -> Counts {
        let text = std::fs::read_to_string(self.dir.join("memory.events")).expect("read memory.events");
        Counts::parse(&text)
    }

    /// Runs `dd` allocating and touching `bytes` in this cgroup; its pid and exit.
    fn run_dd(&self, mib: u32) -> (u32, std::process::ExitStatus) {
        let procs = self.dir.join("cgroup.procs");
        let script = format!(
            "echo $$ > {} && exec dd if=/dev/zero of=/dev/null bs={mib}M count=1",
            procs.display()
        );
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

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Killed tasks can linger a moment after they were reaped.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    high: u64,
    max: u64,
    oom: u64,
    oom_kill: u64,
    oom_group_kill: u64,
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
                "oom_group_kill" => c.oom_group_kill = v,
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
            oom_group_kill: self.oom_group_kill - before.oom_group_kill,
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
        sum.oom_group_kill += get("oom_group_kill");
        n += 1;
    }
    (sum, n)
}

#[test]
fn without_memory_controller_run_reports_memcg_unavailable_and_resets_still_work() {
    let Some(bin) = require_root_and_bin() else { return };
    let Err(reason) = memory_root() else {
        eprintln!("SKIPPED: this host has a cgroup v2 memory controller (the VM tests below cover it)");
        return;
    };
    let mut observer = Observer::start(&bin);
    let warning = observer.wait_for_stderr("memcg signals", Duration::from_secs(5));
    assert!(warning.contains("unavailable") && warning.contains("no cgroup"), "{warning} (expected: {reason})");
    // A reset on loopback: a connect to a port nobody listens on any more.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind").local_addr().expect("addr").port();
    let err = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).expect_err("connect to a closed port");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    std::thread::sleep(Duration::from_millis(300));
    let stopped = observer.stop();
    let ours = stopped
        .tcp_resets()
        .into_iter()
        .filter(|r| r.direction == "sent" && r.local_port == port)
        .count();
    assert_eq!(ours, 1, "resets to port {port}; stderr:\n{}", stopped.stderr.join("\n"));
    let ready = stopped.stderr.iter().find(|l| l.contains("observer: ready")).expect("ready line");
    assert!(ready.contains("memcg: unavailable"), "{ready}");
}

#[test]
fn memory_high_events_match_memory_events_for_both_mechanisms() {
    let Some(bin) = require_root_and_bin() else { return };
    let Some(root) = require_memory_root() else { return };
    // Both mechanisms watch the same run: one workload, two agents.
    let inotify = Observer::start_with(&bin, &["--memcg-mechanism", "inotify"]);
    let poll = Observer::start_with(&bin, &["--memcg-mechanism", "poll"]);
    let cg = TestCgroup::create(&root, "high", &[("memory.high", "8M"), ("memory.swap.max", "0")]);
    let before = cg.events();
    let (pid, status) = cg.run_dd(16);
    assert!(status.success(), "dd (pid {pid}) under memory.high: {status}");
    let delta = cg.events().since(before);
    let (inotify, poll) = (inotify.stop(), poll.stop());
    assert!(delta.high > 0, "the workload never went over memory.high: {delta:?}");
    for (name, stopped) in [("inotify", &inotify), ("poll", &poll)] {
        let (seen, n) = summed_deltas(stopped, &cg.rel);
        eprintln!("{name}: {n} memcg.events for {}, summed {seen:?}; memory.events delta {delta:?}", cg.rel);
        assert_eq!(seen.high, delta.high, "{name}: summed high deltas vs memory.events");
        assert_eq!(seen, delta, "{name}: every counter");
        let first = stopped
            .events
            .iter()
            .find(|e| e["kind"] == "memcg.events" && e["cgroup_path"] == cg.rel.as_str())
            .expect("an event");
        assert_eq!(first["mechanism"], name, "{first}");
        assert_eq!(first["memory_high"], 8 << 20, "{first}");
        assert_eq!(first["cgroup_source"], "cgroup", "{first}");
    }
}

#[test]
fn oom_kills_are_reported_once_per_victim() {
    let Some(bin) = require_root_and_bin() else { return };
    let Some(root) = require_memory_root() else { return };
    let observer = Observer::start(&bin);
    let cg = TestCgroup::create(
        &root,
        "oom",
        &[("memory.max", "16M"), ("memory.swap.max", "0"), ("memory.oom.group", "0")],
    );
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
    eprintln!("killed {killed:?}; memory.events delta {delta:?}; oom_kill events: {kills:?}");
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
