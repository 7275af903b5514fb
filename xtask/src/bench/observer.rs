//! The agent under measurement: `observer run --output-dir DIR --quiet`,
//! started and stopped by the benchmark, with its CPU time from `/proc`.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::signal::Signal,
    unistd::{SysconfVar, sysconf},
};

use super::child;

const READY_WITHIN: Duration = Duration::from_secs(60);
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// A running agent, attached.
pub struct Observer {
    proc: Child,
    stderr: Receiver<String>,
    cpu_at_ready: Duration,
}

/// What a stopped agent said and used.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    /// From `observer: stopped events=N lost=M` (all namespaces).
    pub events: u64,
    pub lost: u64,
    /// utime + stime from ready to exit (its drain after SIGTERM included).
    pub cpu: Duration,
}

impl Observer {
    /// Starts the agent writing into `dir` (emptied first) and waits until it
    /// says it is attached.
    pub fn start(bin: &Path, dir: &Path) -> Result<Self> {
        Self::start_with(bin, dir, &[])
    }

    /// [`Observer::start`] with more arguments (`--log-level` goes first, as
    /// it is global).
    pub fn start_with(bin: &Path, dir: &Path, extra: &[&str]) -> Result<Self> {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--quiet", "--output-dir"])
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut proc = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let Some(stderr) = proc.stderr.take() else {
            child::kill_and_reap(&mut proc);
            bail!("no stderr pipe from {cmd:?}");
        };
        let mut observer = Self { proc, stderr: child::lines(stderr), cpu_at_ready: Duration::ZERO };
        let mut seen = Vec::new();
        let ready = |l: &str| l.starts_with("observer: ready");
        if let Err(err) = child::wait_for_line(&observer.stderr, ready, READY_WITHIN, &mut seen) {
            bail!("{cmd:?} did not get ready: {err}; it said:\n{}", seen.join("\n"));
        }
        observer.cpu_at_ready = cpu_time(observer.proc.id())?;
        Ok(observer)
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Waits up to `limit` for a stderr line that satisfies `wanted`; every
    /// line read on the way is pushed on `seen` (the match too).
    pub fn wait_for(&self, wanted: impl Fn(&str) -> bool, limit: Duration, seen: &mut Vec<String>) -> Result<()> {
        let line = child::wait_for_line(&self.stderr, wanted, limit, seen)?;
        seen.push(line);
        Ok(())
    }

    /// SIGTERM (by pid), waits for the exit, reads the CPU time before reaping,
    /// and parses the summary line.
    pub fn stop(self) -> Result<Stopped> {
        self.stop_within(STOP_WITHIN)
    }

    /// [`Observer::stop`] waiting up to `limit` for the exit.
    pub fn stop_within(mut self, limit: Duration) -> Result<Stopped> {
        if let Some(status) = self.proc.try_wait()? {
            let said: Vec<String> = self.stderr.try_iter().collect();
            bail!("observer exited early ({status}); it said:\n{}", said.join("\n"));
        }
        child::signal(&mut self.proc, Signal::SIGTERM)?;
        if !child::wait_exited_unreaped(&self.proc, limit)? {
            bail!("observer did not exit within {limit:?} of SIGTERM");
        }
        let cpu = cpu_time(self.proc.id())?.saturating_sub(self.cpu_at_ready);
        let status = self.proc.wait()?;
        let mut seen = Vec::new();
        let summary = |l: &str| l.starts_with("observer: stopped");
        let line = child::wait_for_line(&self.stderr, summary, STOP_WITHIN, &mut seen)
            .with_context(|| format!("no summary line; it said:\n{}", seen.join("\n")))?;
        if !status.success() {
            bail!("observer exited with {status}; it said:\n{}", seen.join("\n"));
        }
        Ok(Stopped { events: field(&line, "events")?, lost: field(&line, "lost")?, cpu })
    }
}

impl Drop for Observer {
    /// Only on error paths: [`Observer::stop`] has reaped it otherwise.
    fn drop(&mut self) {
        child::kill_and_reap(&mut self.proc);
    }
}

/// Counts the `tcp.reset` events of network namespace `netns` in the agent's
/// `DIR/events.jsonl`: (sent, received).
pub fn count_resets(dir: &Path, netns: u64) -> Result<(u64, u64)> {
    let path = dir.join("events.jsonl");
    let file = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let (mut sent, mut received) = (0, 0);
    for line in BufReader::new(file).lines() {
        let line = line?;
        let ev: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}: not JSON: {line:?}", path.display()))?;
        if ev["kind"] != "tcp.reset" || ev["netns"].as_u64() != Some(netns) {
            continue;
        }
        match ev["direction"].as_str() {
            Some("sent") => sent += 1,
            Some("received") => received += 1,
            _ => {}
        }
    }
    Ok((sent, received))
}

/// utime + stime of process `pid` (all its threads), from `/proc/PID/stat`.
pub(super) fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The fields after the parenthesised comm (which may hold spaces):
    // state(3) ... utime(14) stime(15), so utime is the 12th after it.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).with_context(|| format!("{path}: {stat:?}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        let f = fields.get(i).with_context(|| format!("{path}: too short"))?;
        f.parse().with_context(|| format!("{path}: field {f:?}"))
    };
    let total = ticks(11)? + ticks(12)?;
    let hz = sysconf(SysconfVar::CLK_TCK)?
        .and_then(|hz| u64::try_from(hz).ok())
        .filter(|&hz| hz > 0)
        .context("sysconf(CLK_TCK)")?;
    Ok(Duration::from_nanos(total * 1_000_000_000 / hz))
}

/// `NAME=value` from the summary line.
fn field(line: &str, name: &str) -> Result<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .with_context(|| format!("no {name}= in {line:?}"))?
        .parse()
        .with_context(|| format!("{name} in {line:?}"))
}
