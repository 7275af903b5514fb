//! The agent as the Helm chart runs it: the root user with exactly the
//! capabilities the agent lists (`observer check --capabilities`, which the
//! chart's test holds the chart to) and no other, set by `setpriv` as the
//! bounding set. The running agent's `CapEff` is that set, exactly; then
//! - `observer check` passes and names no missing capability;
//! - a reset burst in a fresh namespace: the agent's resets == `nstat`;
//! - a Go program of ANOTHER user (nobody), from an executable only that
//!   user may read: every gctrace cycle is a `go.gc` event;
//! - without any one capability of the set, `observer check` names it and
//!   the signals it costs.

use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use observer_e2e::episodes::{NetnsHolder, closed_port, closed_port_burst, unique_service};
use observer_e2e::gofixture::{self, GoFixture, Toolchain, Variant, gctrace_cycles};
use observer_e2e::netns::Netns;
use observer_e2e::nstat::nstat;
use observer_e2e::observer::Observer;
use observer_e2e::require::require_root_and_bin;

const NOBODY: u32 = 65534;
const ATTACH_WITHIN: Duration = Duration::from_secs(30);
const RUN_WITHIN: Duration = Duration::from_secs(120);
const WORK: &[&str] = &["-wait-stdin", "-allocs", "10000", "-alloc-size", "65536", "-forced-gcs", "2"];

/// `CAP_BPF` ... as the agent lists them.
fn listed(bin: &Path) -> Vec<String> {
    let out = Command::new(bin).args(["check", "--capabilities"]).output().expect("observer check --capabilities");
    assert!(out.status.success(), "observer check --capabilities: {out:?}");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

/// The capability's number, as the kernel's `CapEff` bits count them.
fn number(cap: &str) -> u32 {
    let out = Command::new("capsh").arg(format!("--explain={}", cap.to_lowercase())).output();
    // capsh is not always installed: the numbers of the capabilities we use.
    if let Ok(out) = out
        && let Some(n) = String::from_utf8_lossy(&out.stdout).split(['[', ']']).nth(1).and_then(|n| n.parse().ok())
    {
        return n;
    }
    match cap {
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_SYSLOG" => 34,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("no number known for {other}"),
    }
}

/// A script that runs the agent as root with exactly `caps` (a `setpriv`
/// bounding set; root's effective set is its bounding set after exec).
fn confined(bin: &Path, caps: &[String], dir: &Path) -> PathBuf {
    let set: String = caps.iter().map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase())).collect();
    let script = dir.join(format!("observer-confined-{}", caps.len()));
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec setpriv --bounding-set=-all{set} --inh-caps=-all {} \"$@\"\n", bin.display()),
    )
    .expect("writing the wrapper");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

fn cap_eff(pid: u32) -> u64 {
    status_caps(&format!("/proc/{pid}/status"), "CapEff:")
}

fn cap_bnd() -> u64 {
    status_caps("/proc/self/status", "CapBnd:")
}

fn status_caps(path: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(path).expect("status");
    let hex = status.lines().find_map(|l| l.strip_prefix(field)).expect(field).trim().to_owned();
    u64::from_str_radix(&hex, 16).expect("capability set hex")
}

#[test]
fn the_listed_capabilities_are_enough_and_each_one_is_named_when_missing() {
    let Some(bin) = require_root_and_bin() else { return };
    let all = listed(&bin);
    assert!(all.len() >= 5 && all.contains(&"CAP_BPF".to_string()), "the agent's list: {all:?}");
    // A capability outside our own bounding set cannot be granted (this
    // machine withholds CAP_SYS_RESOURCE): check must name exactly those.
    let ours = cap_bnd();
    let (caps, withheld): (Vec<String>, Vec<String>) = all.into_iter().partition(|c| ours & 1 << number(c) != 0);
    if !withheld.is_empty() {
        eprintln!("note: this machine withholds {withheld:?}: the agent runs without them");
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let agent = confined(&bin, &caps, dir.path());

    // check: passes, nothing named missing.
    let out = Command::new(&agent).arg("check").output().expect("observer check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "observer check with the listed set: {stderr}");
    let named: Vec<&str> =
        stderr.lines().filter(|l| l.contains(" missing (")).filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert_eq!(named, withheld, "capabilities check names missing with the listed set: {stderr}");

    // The Go program of another user, from an executable only it may read.
    let fixture = gofixture::build(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("gofixtures"),
        Toolchain::Release("go1.27.4"),
        Variant::Plain,
    );
    let private = dir.path().join("gofixture-private");
    std::fs::copy(&fixture, &private).expect("copying the fixture");
    chown(&private, Some(NOBODY), Some(NOBODY)).expect("chown");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    let mut observer = Observer::start(&agent);
    let expected: u64 = caps.iter().fold(0, |s, c| s | 1 << number(c));
    assert_eq!(cap_eff(observer.pid()), expected, "the running agent's CapEff vs the listed set {caps:?}");

    // Resets in the agent's view == the namespace's own count.
    let ns = Netns::create();
    let holder = NetnsHolder::start(&ns, &unique_service("leastpriv"));
    let before = nstat(&ns, "TcpOutRsts");
    let report =
        closed_port_burst(Path::new(env!("CARGO_BIN_EXE_resetgen")), &ns, closed_port(0), 10, &holder.service_name);
    let sent = nstat(&ns, "TcpOutRsts") - before;
    assert_eq!(sent, 10, "TcpOutRsts for 10 closed-port connections");

    let setpriv_args: Vec<String> = ["--reuid", "65534", "--regid", "65534", "--clear-groups"]
        .iter()
        .map(|s| s.to_string())
        .chain(std::iter::once(private.display().to_string()))
        .chain(WORK.iter().map(|s| s.to_string()))
        .collect();
    let args: Vec<&str> = setpriv_args.iter().map(String::as_str).collect();
    let mut go = GoFixture::start(Path::new("/usr/bin/setpriv"), &args, &[("GODEBUG", "gctrace=1")]);
    let pid = go.pid;
    observer.wait_for_stderr(&format!("observer: go: attached pid={pid} "), ATTACH_WITHIN);
    go.go();
    let finished = go.finish(RUN_WITHIN);
    let stopped = observer.stop();

    let seen = stopped.tcp_resets().iter().filter(|r| r.direction == "sent" && r.netns == ns.inode()).count() as u64;
    assert_eq!(
        seen,
        sent,
        "resets sent the confined agent saw in {} vs nstat ({} sockets)",
        ns.name(),
        report.sockets.len()
    );
    let gctrace = gctrace_cycles(&finished.stderr);
    let gc = stopped.events.iter().filter(|e| e["kind"] == "go.gc" && e["pid"] == pid).count();
    assert!(!gctrace.is_empty(), "the fixture ran no GC cycle");
    assert_eq!(gc, gctrace.len(), "go.gc events of nobody's process vs its gctrace");

    // Each one taken away: check names it, and what it costs.
    for drop in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != drop).cloned().collect();
        let out = Command::new(confined(&bin, &fewer, dir.path())).arg("check").output().expect("observer check");
        let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        let named = text.lines().find(|l| l.contains(&format!("{drop} missing (")));
        assert!(named.is_some(), "without {drop}, observer check does not name it:\n{text}");
    }
}
