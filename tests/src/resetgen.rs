//! The reset generator's reports (shared by `src/bin/resetgen.rs` and the
//! tests) and how a test runs it.

use std::fmt;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::command::{line_channel, output_within, wait_within};

/// How a reset is provoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Connect to a port nobody listens on: the server's kernel sends the RST,
    /// the client's connect fails with ECONNREFUSED.
    ClosedPort,
    /// The client closes with `SO_LINGER {on, 0}`: the client sends the RST,
    /// the server's read fails with ECONNRESET.
    Linger,
    /// The server closes normally (FIN); the client reads EOF and then writes:
    /// the server's orphaned socket answers with an RST. The client is in
    /// CLOSE_WAIT when that arrives, for which the kernel reports EPIPE, not
    /// ECONNRESET (`tcp_reset()`).
    DataAfterClose,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::ClosedPort, Kind::Linger, Kind::DataAfterClose];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ClosedPort => "closed-port",
            Kind::Linger => "linger",
            Kind::DataAfterClose => "data-after-close",
        }
    }

    /// Whether the client sends the RST (else the server's side sends it).
    pub fn client_sends(self) -> bool {
        self == Kind::Linger
    }

    /// The errno the receiving side of the RST sees.
    pub fn receiver_errno(self) -> &'static str {
        match self {
            Kind::ClosedPort => "ECONNREFUSED",
            Kind::Linger => "ECONNRESET",
            Kind::DataAfterClose => "EPIPE",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind {s:?} (closed-port, linger, data-after-close)"))
    }
}

/// What one generator process did, printed as one JSON line on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// `client` or `server`.
    pub role: String,
    pub kind: Kind,
    pub pid: u32,
    /// The generator's cgroup v2 path (`0::` line of /proc/self/cgroup).
    pub cgroup: String,
    pub sockets: Vec<SocketReport>,
}

/// One connection (attempt) of this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SocketReport {
    /// getsockname() of this process's socket.
    pub local: SocketAddr,
    /// The peer: getpeername(), or the address connected to when refused.
    pub remote: SocketAddr,
    /// The error this socket saw from a received RST (`ECONNRESET`, ...), when
    /// this side is the one that receives it.
    pub errno: Option<String>,
}

/// The first line a server prints once it listens.
#[derive(Debug, Serialize, Deserialize)]
pub struct Listening {
    pub listening: SocketAddr,
}

/// A running `resetgen server`.
pub struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    /// Spawns `cmd` (a `resetgen server ...` command line, typically wrapped
    /// in `ip netns exec`) and waits until it listens.
    pub fn start(cmd: &mut Command) -> Server {
        let mut child =
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let lines = line_channel(child.stdout.take().expect("piped stdout"));
        let mut server = Server { child, lines };
        let first = server.next_line(Duration::from_secs(10));
        serde_json::from_str::<Listening>(&first).unwrap_or_else(|e| panic!("resetgen server said {first:?}: {e}"));
        server
    }

    /// Waits for the server to serve its connections and returns its report.
    pub fn finish(mut self) -> Report {
        let line = self.next_line(Duration::from_secs(60));
        let status = wait_within(&mut self.child, Duration::from_secs(10)).expect("resetgen server did not exit");
        assert!(status.success(), "resetgen server exited with {status}");
        parse_report(&line)
    }

    fn next_line(&mut self, limit: Duration) -> String {
        match self.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(e) => {
                let _ = wait_within(&mut self.child, Duration::ZERO);
                panic!("no line from resetgen server within {limit:?} ({e})")
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Kill only our own child, by pid, if a failed test left it running.
        let _ = wait_within(&mut self.child, Duration::ZERO);
    }
}

/// Runs `cmd` (a `resetgen client ...` command line) to its end and returns
/// its report.
pub fn run_client(cmd: &mut Command) -> Report {
    let out = output_within(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "resetgen client exited with {}:\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_report(stdout.trim())
}

fn parse_report(line: &str) -> Report {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad resetgen report {line:?}: {e}"))
}
