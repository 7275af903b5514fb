//! The Go fixture (`tests/fixtures/gofixture`): built with the machine's `go`
//! by the test, run with flags, its `ready pid=N` awaited and its stderr
//! (where `GODEBUG=gctrace=1` writes) kept.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::command::{line_channel, output_within, wait_within};

const READY_WITHIN: Duration = Duration::from_secs(30);
/// A cold build (PIE rebuilds the standard library) on a busy 2-core machine.
const BUILD_WITHIN: Duration = Duration::from_secs(600);

/// The fixture's source directory.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gofixture")
}

/// Builds the fixture into `out_dir` with the preinstalled `go`, offline.
pub fn build(out_dir: &Path) -> PathBuf {
    build_variant(out_dir, "gofixture", &[])
}

/// Same, named `name`, with extra `go build` flags (`-buildmode=pie`,
/// `-ldflags=-s -w`, `-trimpath`).
pub fn build_variant(out_dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let bin = out_dir.join(name);
    let mut cmd = Command::new("go");
    cmd.arg("build")
        .args(flags)
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(source_dir())
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off");
    let out = output_within(&mut cmd, BUILD_WITHIN);
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    bin
}

/// A running fixture that said `ready pid=N`.
pub struct GoFixture {
    child: Child,
    pub pid: u32,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// What a finished fixture printed.
pub struct Finished {
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl GoFixture {
    /// Starts `bin args...` with `env` and stdin piped (for `-wait-stdin`).
    pub fn start(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> GoFixture {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let stdout = line_channel(child.stdout.take().expect("piped stdout"));
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        let stdin = child.stdin.take();
        let line = stdout.recv_timeout(READY_WITHIN);
        let pid = line.as_deref().ok().and_then(|l| l.strip_prefix("ready pid=")).and_then(|p| p.parse().ok());
        let Some(pid) = pid else {
            let _ = wait_within(&mut child, Duration::ZERO);
            panic!("fixture did not say `ready pid=N` within {READY_WITHIN:?}: {line:?}");
        };
        GoFixture { child, pid, stdin, stdout, stderr: Some(stderr) }
    }

    /// Lets a `-wait-stdin` fixture start working.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(b"go\n").expect("write to fixture stdin");
        stdin.flush().expect("flush fixture stdin");
    }

    /// Waits for the fixture to exit 0 and returns what it printed.
    pub fn finish(mut self, within: Duration) -> Finished {
        self.stdin.take();
        let status = wait_within(&mut self.child, within)
            .unwrap_or_else(|| panic!("fixture pid {} still running after {within:?}; killed it", self.pid));
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        assert!(status.success(), "fixture pid {} exited with {status}; stderr:\n{stderr}", self.pid);
        Finished { stdout: self.stdout.try_iter().collect(), stderr }
    }
}

impl Drop for GoFixture {
    fn drop(&mut self) {
        // Only with the fixture still running when a test failed: our child, by pid.
        let _ = wait_within(&mut self.child, Duration::ZERO);
    }
}

/// The cycle numbers of the `gc N @...` lines that `GODEBUG=gctrace=1` printed.
pub fn gctrace_cycles(stderr: &str) -> Vec<u32> {
    stderr
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("gc")).then(|| words.next()?.parse().ok()).flatten()
        })
        .collect()
}

/// Same numbers as a set, for comparisons.
pub fn cycle_set(cycles: &[u32]) -> BTreeSet<u32> {
    cycles.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::gctrace_cycles;

    #[test]
    fn reads_gctrace_lines_only() {
        let stderr = "\
gc 1 @0.998s 0%: 0.098+0.32+0.12 ms clock, 0.19+0.26/0.001/0+0.25 ms cpu, 3->3->0 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P
scvg: 0 MB released
gc 2 @1.003s 0%: 0.055+0.49+0.057 ms clock, 3->3->0 MB, 4 MB goal, 2 P (forced)
gcfoo 3
";
        assert_eq!(gctrace_cycles(stderr), vec![1, 2]);
    }
}
