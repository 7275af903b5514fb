//! The agent under test: spawned, awaited until ready, stopped with SIGTERM,
//! and its events read back.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use tempfile::TempDir;

use crate::command::{line_channel, wait_within};

const READY: &str = "observer: ready";
const STOPPED: &str = "observer: stopped";
const READY_WITHIN: Duration = Duration::from_secs(30);
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// A running `observer run`, writing into its own temporary directory.
/// Dropping it without [`Observer::stop`] kills it.
pub struct Observer {
    child: Child,
    /// The output directory (removed with it when it is ours).
    dir: PathBuf,
    _ours: Option<TempDir>,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

/// What a stopped agent left behind.
#[derive(Debug)]
pub struct Stopped {
    /// Every line of `events.jsonl`, parsed.
    pub events: Vec<serde_json::Value>,
    /// `events=` and `lost=` of the summary line.
    pub summary_events: u64,
    pub lost: u64,
    pub stderr: Vec<String>,
    /// The `observer: stopped ...` line itself.
    pub summary: String,
    /// From our signal until the agent was reaped (to within 20 ms).
    pub exited_after: Duration,
    /// Every line of `traces.jsonl` (OTLP JSON trace requests), parsed.
    pub traces: Vec<serde_json::Value>,
}

impl Observer {
    /// Starts `bin run --output-dir TMP --quiet` and waits for its ready line.
    pub fn start(bin: &Path) -> Observer {
        Self::start_with(bin, &[])
    }

    /// [`Observer::start`] with extra `run` arguments.
    pub fn start_with(bin: &Path, extra: &[&str]) -> Observer {
        Self::start_env(bin, extra, &[])
    }

    /// [`Observer::start_with`] with extra environment variables (the
    /// `OTEL_EXPORTER_OTLP_*` of a collector, for example).
    pub fn start_env(bin: &Path, extra: &[&str], env: &[(String, OsString)]) -> Observer {
        let dir = tempfile::tempdir().expect("temporary output directory");
        Self::spawn(bin, dir.path().to_path_buf(), Some(dir), extra, env)
    }

    /// [`Observer::start_with`], writing into `dir` (the caller's, kept).
    pub fn start_in(bin: &Path, dir: &Path, extra: &[&str]) -> Observer {
        Self::spawn(bin, dir.to_path_buf(), None, extra, &[])
    }

    fn spawn(bin: &Path, dir: PathBuf, ours: Option<TempDir>, extra: &[&str], env: &[(String, OsString)]) -> Observer {
        let mut child = Command::new(bin)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg("run")
            .arg("--output-dir")
            .arg(&dir)
            .arg("--quiet")
            .args(extra)
            // Any free port: tests (and agents of other runs) never share one.
            .args(if extra.contains(&"--listen") { &[][..] } else { &["--listen", "127.0.0.1:0"][..] })
            // A backstop: the agent ends by itself should this test process die.
            .args(["--duration", "10m"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let stderr = line_channel(child.stderr.take().expect("piped stderr"));
        let mut observer = Observer { child, dir, _ours: ours, stderr, seen: Vec::new() };
        observer.wait_ready();
        observer
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + crate::bound(READY_WITHIN);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.contains(READY);
                    self.seen.push(line);
                    if ready {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = wait_within(&mut self.child, Duration::ZERO);
                    panic!("no {READY:?} within {:?}; stderr:\n{}", crate::bound(READY_WITHIN), self.seen.join("\n"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = wait_within(&mut self.child, EXIT_WITHIN);
                    panic!("observer exited ({status:?}) before {READY:?}; stderr:\n{}", self.seen.join("\n"));
                }
            }
        }
    }

    /// The agent's pid (to look at its descriptors).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where it serves `/metrics`, `/healthz` and `/readyz` (from its ready line).
    pub fn metrics_addr(&self) -> SocketAddr {
        let ready = self.seen.iter().find(|l| l.contains(READY)).expect("the ready line");
        let at = ready.split("/readyz on http://").nth(1).unwrap_or_else(|| panic!("no endpoint address in {ready}"));
        let addr = at.split([';', ' ']).next().unwrap_or_default();
        addr.parse().unwrap_or_else(|e| panic!("{addr:?} in {ready}: {e}"))
    }

    /// Its `--output-dir`.
    pub fn output_dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the agent has not exited (it is not reaped here).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What `traces.jsonl` holds so far (a partly written last line left out).
    pub fn traces(&self) -> Vec<serde_json::Value> {
        crate::otlp::read_json_lines(&self.dir.join("traces.jsonl"))
    }

    /// The stderr lines read so far (the ready line and what
    /// [`Observer::wait_for_stderr`] went through).
    pub fn stderr_seen(&self) -> &[String] {
        &self.seen
    }

    /// Waits until the agent printed a stderr line containing `needle`
    /// (also before it was ready) and returns that line.
    pub fn wait_for_stderr(&mut self, needle: &str, within: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(_) => panic!("observer printed no {needle:?} within {within:?}; stderr:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Sends SIGTERM to the agent (its pid only), waits for it, checks it
    /// exited 0 with a summary line, and returns its events.
    pub fn stop(self) -> Stopped {
        self.stop_with(Signal::SIGTERM)
    }

    /// [`Observer::stop`] with another signal (SIGINT: Ctrl-C).
    pub fn stop_with(mut self, signal: Signal) -> Stopped {
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, signal).unwrap_or_else(|e| panic!("{signal} to observer: {e}"));
        let signalled = Instant::now();
        let status = wait_within(&mut self.child, EXIT_WITHIN);
        let exited_after = signalled.elapsed();
        let stderr = self.rest_of_stderr();
        let status: ExitStatus = status.unwrap_or_else(|| {
            panic!(
                "observer still running {:?} after {signal}; killed it. stderr:\n{}",
                crate::bound(EXIT_WITHIN),
                stderr.join("\n")
            )
        });
        assert_eq!(
            status.code(),
            Some(0),
            "observer exited with {status} after {signal}; stderr:\n{}",
            stderr.join("\n")
        );
        let summary = stderr
            .iter()
            .find(|l| l.contains(STOPPED))
            .unwrap_or_else(|| panic!("no {STOPPED:?} line; stderr:\n{}", stderr.join("\n")));
        let (summary_events, lost) =
            parse_summary(summary).unwrap_or_else(|| panic!("cannot read events=/lost= in {summary:?}"));
        let events = read_events(&self.dir.join("events.jsonl"));
        let summary = summary.clone();
        // In the log of every run (the VM harness keeps them): where a slow stop shows.
        eprintln!("observer exited {exited_after:.1?} after {signal}: {summary}");
        let traces = crate::otlp::read_json_lines(&self.dir.join("traces.jsonl"));
        Stopped { events, summary_events, lost, stderr, summary, exited_after, traces }
    }

    fn rest_of_stderr(&mut self) -> Vec<String> {
        let mut lines = std::mem::take(&mut self.seen);
        // Bounded: stderr ends when the agent exits (unless it left children).
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            lines.push(line);
        }
        lines
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        // Only reached with the agent still running when a test failed: kill
        // our own child by pid. A no-op once it has been reaped.
        let _ = wait_within(&mut self.child, Duration::ZERO);
    }
}

impl Stopped {
    /// The `tcp.reset` events.
    pub fn tcp_resets(&self) -> Vec<TcpReset> {
        self.events
            .iter()
            .filter(|e| e["kind"] == "tcp.reset")
            .map(|e| serde_json::from_value(e.clone()).unwrap_or_else(|err| panic!("tcp.reset event {e}: {err}")))
            .collect()
    }
}

/// One `tcp.reset` event as the agent writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct TcpReset {
    pub time: String,
    pub time_unix_nano: u64,
    /// `sent` or `received`.
    pub direction: String,
    pub family: String,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    pub state: Option<String>,
    pub reason: Option<String>,
    pub netns: u64,
    /// `None` when the reset had no full socket to attribute it to.
    pub cgroup_id: Option<u64>,
    pub cgroup_path: Option<String>,
    /// `socket` or `none`.
    pub cgroup_source: String,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

impl TcpReset {
    pub fn local(&self) -> SocketAddr {
        SocketAddr::new(self.local_addr, self.local_port)
    }
    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(self.remote_addr, self.remote_port)
    }
}

/// The number after `key=` in a summary line (`key` without the `=`).
pub fn summary_field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// `events=N lost=M` from the summary line.
pub fn parse_summary(line: &str) -> Option<(u64, u64)> {
    let value = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)?.parse().ok());
    Some((value("events=")?, value("lost=")?))
}

fn read_events(path: &Path) -> Vec<serde_json::Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // No event at all may leave no file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: not JSON ({e}): {l}", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_summary;

    #[test]
    fn reads_the_summary_line() {
        assert_eq!(parse_summary("observer: stopped events=60 lost=0"), Some((60, 0)));
        assert_eq!(parse_summary("2026-01-01 observer: stopped events=7 lost=2 exported=7"), Some((7, 2)));
        assert_eq!(parse_summary("observer: stopped events=x lost=0"), None);
        assert_eq!(super::summary_field("observer: stopped flushed=2 unflushed=1", "flushed"), Some(2));
        assert_eq!(super::summary_field("observer: stopped unflushed=1", "flushed"), None);
    }
}
