//! Child processes the benchmark starts: their output lines, bounded waits, and
//! signals sent by pid, only to our own children and only while not yet reaped
//! (so the pid cannot belong to anyone else).

use std::{
    io::{BufRead as _, BufReader, Read},
    process::{Child, ExitStatus},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::{
        signal::{self, Signal},
        wait::{Id, WaitPidFlag, WaitStatus, waitid},
    },
    unistd::Pid,
};

/// How often bounded waits look again.
const POLL: Duration = Duration::from_millis(5);

/// The lines of `reader`, read on a thread, as they come; the channel closes at EOF.
pub fn lines(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits up to `limit` for a line that satisfies `wanted`; the lines seen before
/// it are pushed on `seen`. Fails at the deadline or when the stream ends first.
pub fn wait_for_line(
    rx: &Receiver<String>,
    wanted: impl Fn(&str) -> bool,
    limit: Duration,
    seen: &mut Vec<String>,
) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if wanted(&line) => return Ok(line),
            Ok(line) => seen.push(line),
            Err(RecvTimeoutError::Timeout) => bail!("nothing of the kind within {limit:?}"),
            Err(RecvTimeoutError::Disconnected) => bail!("the output ended first"),
        }
    }
}

/// Sends `sig` to `child` if it has not exited yet.
pub fn signal(child: &mut Child, sig: Signal) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = Pid::from_raw(i32::try_from(child.id())?);
    signal::kill(pid, sig).with_context(|| format!("sending {sig} to pid {pid}"))
}

/// Waits up to `limit` for `child` to exit and reaps it; `None` if it is still running.
pub fn wait_within(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL);
    }
}

/// Waits up to `limit` for `child` to exit WITHOUT reaping it, so that its
/// `/proc/PID` still holds its final figures. `false` if it is still running.
pub fn wait_exited_unreaped(child: &Child, limit: Duration) -> Result<bool> {
    let pid = Pid::from_raw(i32::try_from(child.id())?);
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    let deadline = Instant::now() + limit;
    loop {
        match waitid(Id::Pid(pid), flags).with_context(|| format!("waitid on pid {pid}"))? {
            WaitStatus::StillAlive => {}
            _ => return Ok(true),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(POLL);
    }
}

/// Kills `child` (SIGKILL, by its pid) if it is still running, and reaps it.
/// For drop paths: errors are ignored.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = wait_within(child, Duration::from_secs(5));
    }
}
