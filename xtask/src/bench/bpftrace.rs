//! A reference tracer for the same tracepoint: `bpftrace` counting
//! `tcp:tcp_send_reset` in a map, the cheapest thing one can attach there.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use super::child;

pub const PROGRAM: &str = "tracepoint:tcp:tcp_send_reset { @ = count(); }";

const ATTACH_WITHIN: Duration = Duration::from_secs(60);
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// bpftrace on PATH, or why it cannot be used.
pub fn find() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("bpftrace"))
        .find(|p| p.is_file())
        .ok_or_else(|| "bpftrace not found on PATH (`cargo xtask setup` installs it)".into())
}

/// A running bpftrace, attached.
pub struct Bpftrace {
    proc: Child,
    stdout: Receiver<String>,
}

impl Bpftrace {
    /// Starts it and waits for its "Attaching" line.
    pub fn start(bin: &PathBuf) -> Result<Self> {
        let mut cmd = Command::new(bin);
        // -B none: unbuffered, so "Attaching" arrives through the pipe at once.
        cmd.args(["-B", "none", "-e", PROGRAM])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // It warns that it cannot raise RLIMIT_MEMLOCK and works anyway.
            .stderr(Stdio::null());
        let mut proc = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let Some(stdout) = proc.stdout.take() else {
            child::kill_and_reap(&mut proc);
            bail!("no stdout pipe from {cmd:?}");
        };
        let tracer = Self { proc, stdout: child::lines(stdout) };
        let mut seen = Vec::new();
        let attaching = |l: &str| l.starts_with("Attaching");
        if let Err(err) = child::wait_for_line(&tracer.stdout, attaching, ATTACH_WITHIN, &mut seen) {
            bail!("{cmd:?} did not attach: {err}; it said:\n{}", seen.join("\n"));
        }
        Ok(tracer)
    }

    /// SIGINT (by pid), waits for the exit; returns the count it printed
    /// (`@: N`, every namespace), `None` when it printed none.
    pub fn stop(mut self) -> Result<Option<u64>> {
        child::signal(&mut self.proc, Signal::SIGINT)?;
        let Some(status) = child::wait_within(&mut self.proc, STOP_WITHIN)? else {
            bail!("bpftrace did not exit within {STOP_WITHIN:?} of SIGINT");
        };
        if !status.success() {
            bail!("bpftrace exited with {status}");
        }
        let mut seen = Vec::new();
        let count = |l: &str| l.starts_with("@: ");
        Ok(child::wait_for_line(&self.stdout, count, STOP_WITHIN, &mut seen)
            .ok()
            .and_then(|l| l["@: ".len()..].trim().parse().ok()))
    }
}

impl Drop for Bpftrace {
    /// Only on error paths: [`Bpftrace::stop`] has reaped it otherwise.
    fn drop(&mut self) {
        child::kill_and_reap(&mut self.proc);
    }
}
