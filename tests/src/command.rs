//! Running child processes with a bound on their run time.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Runs `cmd` to completion, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = output_within(cmd, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    out
}

/// Runs `cmd` with stdin closed and its output captured. Past `limit` the
/// child (and only it, by pid) is killed and the test panics.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status =
        wait_within(&mut child, limit).unwrap_or_else(|| panic!("{cmd:?} still running after {limit:?}; killed it"));
    Output { status, stdout: join(stdout), stderr: join(stderr) }
}

/// Waits for `child` at most `limit`; on timeout kills it (SIGKILL to its pid),
/// reaps it and returns `None`.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + crate::bound(limit);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

type Reader = Option<thread::JoinHandle<Vec<u8>>>;

/// Reads a pipe to its end on a thread, so a chatty child never blocks on it.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Reader {
    pipe.map(|mut p| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            buf
        })
    })
}

fn join(reader: Reader) -> Vec<u8> {
    reader.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
}

/// The lines of a pipe, read on a thread and handed over through a channel,
/// so a caller can wait for a line with a timeout. The channel disconnects
/// at the pipe's end.
pub fn line_channel<R: Read + Send + 'static>(pipe: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
