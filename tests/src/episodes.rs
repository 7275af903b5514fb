//! Helpers of the episode end-to-end tests (host and VM): reset bursts in a
//! namespace whose workload the test names, the agent's export counters, the
//! episodes of one workload, and gctrace lines placed on the wall clock.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::command::wait_within;
use crate::netns::Netns;
use crate::otlp::{Trace, traces_of_kind};
use crate::resetgen::{Report, run_client};

/// Root span names.
pub const TCP_RESET_BURST: &str = "tcp.reset.burst";
pub const MEMORY_PRESSURE: &str = "memory.pressure";

/// Root attributes.
pub const COUNT_RESET_SENT: &str = "observer.count.tcp.reset.sent";
pub const COUNT_RESET_RECEIVED: &str = "observer.count.tcp.reset.received";
pub const COUNT_GO_GC: &str = "observer.count.go.gc";
pub const CLOSE_REASON: &str = "observer.episode.close_reason";
pub const CGROUP_PATH: &str = "observer.cgroup.path";
/// The exact count of a folded aggregate child (`<kind>.folded`).
pub const FOLDED_COUNT: &str = "observer.folded.count";

/// `exported=N dropped=M failed=K` of the agent's `observer: stopped` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportCounts {
    pub exported: u64,
    pub dropped: u64,
    pub failed: u64,
}

/// Reads the export counters from the stop line; `None` when one is missing.
pub fn export_counts(line: &str) -> Option<ExportCounts> {
    let value = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)?.parse().ok());
    Some(ExportCounts { exported: value("exported=")?, dropped: value("dropped=")?, failed: value("failed=")? })
}

/// [`export_counts`], panicking with the line when it has none.
pub fn expect_export_counts(line: &str) -> ExportCounts {
    export_counts(line).unwrap_or_else(|| panic!("no exported=/dropped=/failed= in the stop line {line:?}"))
}

/// A process that keeps a namespace owned by a named workload: `sleep`
/// inside it with `OTEL_SERVICE_NAME` set (the workload's `service.name`,
/// by the agent's rules). Killed (by pid) on drop.
pub struct NetnsHolder {
    child: Child,
    pub service_name: String,
}

impl NetnsHolder {
    pub fn start(ns: &Netns, service_name: &str) -> NetnsHolder {
        let child = ns
            .exec("sleep")
            .arg("600")
            .env("OTEL_SERVICE_NAME", service_name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning sleep in {}: {e}", ns.name()));
        NetnsHolder { child, service_name: service_name.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        let _ = wait_within(&mut self.child, Duration::ZERO);
    }
}

/// A `service.name` unique to this test process and `tag`.
pub fn unique_service(tag: &str) -> String {
    format!("episodes-{tag}-{}", std::process::id())
}

/// `count` connections to `127.0.0.1:port` inside `ns`, where nobody
/// listens: each is one RST sent by the namespace's kernel and one received
/// by the client (ECONNREFUSED). The client runs with `OTEL_SERVICE_NAME`.
pub fn closed_port_burst(resetgen: &Path, ns: &Netns, port: u16, count: usize, service_name: &str) -> Report {
    let target = format!("127.0.0.1:{port}");
    let count = count.to_string();
    run_client(ns.exec(resetgen).env("OTEL_SERVICE_NAME", service_name).args([
        "client",
        "--bind",
        "127.0.0.1",
        "--connect",
        &target,
        "--kind",
        "closed-port",
        "--count",
        &count,
    ]))
}

/// A port for the closed-port bursts of one test process (another test on
/// the machine making resets in its own namespaces uses other ports).
pub fn closed_port(offset: u16) -> u16 {
    40_000 + (std::process::id() % 10_000) as u16 * 2 + offset
}

/// The episodes of `kind` whose resource's `service.name` is `service`.
pub fn episodes_of(requests: &[serde_json::Value], kind: &str, service: &str) -> Vec<Trace> {
    traces_of_kind(requests, kind).into_iter().filter(|t| t.resource.str("service.name") == Some(service)).collect()
}

/// The episodes of `kind` whose resource is process `pid`.
pub fn episodes_of_pid(requests: &[serde_json::Value], kind: &str, pid: u32) -> Vec<Trace> {
    traces_of_kind(requests, kind)
        .into_iter()
        .filter(|t| t.resource.u64("process.pid") == Some(u64::from(pid)))
        .collect()
}

/// The records of kind `name` in a trace: its `name` spans plus the
/// `observer.folded.count` of its `name.folded` aggregates.
pub fn count_with_folded(trace: &Trace, name: &str) -> u64 {
    let folded_name = format!("{name}.folded");
    let spans = trace.spans_named(name).count() as u64;
    let folded: u64 = trace
        .spans_named(&folded_name)
        .map(|s| {
            s.attributes
                .u64(FOLDED_COUNT)
                .unwrap_or_else(|| panic!("{folded_name} without {FOLDED_COUNT}: {:?}", s.attributes))
        })
        .sum();
    spans + folded
}

/// Summaries of traces, one per line, for assertion messages.
pub fn show(traces: &[Trace]) -> String {
    if traces.is_empty() {
        return "(no trace)".into();
    }
    traces.iter().map(Trace::summary).collect::<Vec<_>>().join("\n")
}

/// Each `gc N @S.SSSs` line of a gctrace: the cycle and the seconds since
/// the process started at which the cycle began (ms precision).
pub fn gctrace_starts(stderr: &str) -> Vec<(u32, f64)> {
    stderr
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next()? != "gc" {
                return None;
            }
            let cycle = w.next()?.parse().ok()?;
            let at = w.next()?.strip_prefix('@')?.strip_suffix('s')?.parse().ok()?;
            Some((cycle, at))
        })
        .collect()
}

/// The resident set of a process in KiB (`VmRSS`), `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

/// Runs `cmd` (the agent with arguments and environment) to its end, bounded.
pub fn run_to_exit(cmd: &mut Command, limit: Duration) -> std::process::Output {
    crate::command::output_within(cmd, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_export_counts() {
        let line = "observer: stopped events=12 lost=0 exported=3 dropped=1 failed=2 late=0";
        assert_eq!(export_counts(line), Some(ExportCounts { exported: 3, dropped: 1, failed: 2 }));
        assert_eq!(export_counts("observer: stopped events=1 lost=0"), None);
    }

    #[test]
    fn reads_gctrace_start_times() {
        let stderr = "gc 1 @0.998s 0%: 0.098+0.32+0.12 ms clock, 0.19+0.26/0.001/0+0.25 ms cpu, 3->3->0 MB, 4 MB goal, 2 P\n\
                      scvg: nothing\ngc 12 @10.250s 3%: 0.05+0.4+0.05 ms clock, x ms cpu, 3->3->0 MB, 4 MB goal, 2 P\n";
        assert_eq!(gctrace_starts(stderr), vec![(1, 0.998), (12, 10.25)]);
    }

    #[test]
    fn closed_ports_differ_by_offset() {
        assert_eq!(closed_port(1), closed_port(0) + 1);
        assert!(closed_port(0) >= 40_000 && closed_port(1) < 60_002);
    }
}
