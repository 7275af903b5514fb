//! A real terminal for the live view's tests: a tmux server of the test's
//! own (its own socket, killed on drop), one pane running a command; keys
//! typed with `send-keys`, the screen read with `capture-pane`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::command::run_ok;

/// A tmux server with one pane of `width` x `height`.
pub struct Tmux {
    socket: PathBuf,
    dir: TempDir,
}

/// Whether tmux is installed; `None` after reporting why the test is skipped
/// (a failure under `OBSERVER_E2E_REQUIRED=1`).
pub fn require_tmux() -> Option<()> {
    match Command::new("tmux").arg("-V").output() {
        Ok(out) if out.status.success() => Some(()),
        _ => crate::require::skip("tmux is not installed (`cargo xtask setup` installs it; or apt-get install tmux)"),
    }
}

impl Tmux {
    /// Starts `command` (a shell command line) in a fresh server's only pane.
    /// The pane stays when the command ends, so its last screen can be read.
    pub fn start(command: &str, width: u16, height: u16) -> Tmux {
        let dir = tempfile::tempdir().expect("tmux temporary directory");
        let conf = dir.path().join("tmux.conf");
        std::fs::write(&conf, "set -g remain-on-exit on\nset -g status off\nset -g escape-time 0\n")
            .expect("tmux.conf");
        let socket = dir.path().join("tmux.sock");
        let tmux = Tmux { socket, dir };
        run_ok(
            tmux.cmd()
                .arg("-f")
                .arg(&conf)
                .args(["new-session", "-d", "-s", "t", "-x", &width.to_string(), "-y", &height.to_string()])
                .arg(command),
        );
        tmux
    }

    /// A scratch directory that lives as long as the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(&self.socket);
        cmd
    }

    /// Keys by tmux name (`Enter`, `Tab`, `Escape`, `Down`, `q`, …), one at a
    /// time with a pause after each, as a person types.
    pub fn keys(&self, keys: &[&str]) {
        for key in keys {
            run_ok(self.cmd().args(["send-keys", "-t", "t", key]));
            sleep(Duration::from_millis(150));
        }
    }

    /// Literal text.
    pub fn type_text(&self, text: &str) {
        run_ok(self.cmd().args(["send-keys", "-t", "t", "-l", text]));
        sleep(Duration::from_millis(150));
    }

    /// The visible screen as text.
    pub fn screen(&self) -> String {
        let out = run_ok(self.cmd().args(["capture-pane", "-p", "-t", "t"]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A tmux format about the pane (`#{alternate_on}`, `#{cursor_flag}`, …).
    pub fn display(&self, format: &str) -> String {
        let out = run_ok(self.cmd().args(["display-message", "-p", "-t", "t", format]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Polls the screen until `ok` holds; returns that screen, or panics
    /// with the last one.
    pub fn wait_for(&self, what: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!("the screen did not show {what} within {within:?}; it shows:\n{screen}");
            }
            sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Our own server, on our own socket: it ends the pane's processes.
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// One table cell of the screen: in the line holding `row`, the text under
/// the column whose header (in the line holding `header_line`) starts with
/// `column`, up to the next column. Character positions, not bytes.
pub fn cell(screen: &str, header_line: &str, row: &str, column: &str) -> Option<String> {
    let header: Vec<char> = screen.lines().find(|l| l.contains(header_line))?.chars().collect();
    let line: Vec<char> = screen.lines().find(|l| l.contains(row))?.chars().collect();
    let starts: Vec<usize> =
        (0..header.len()).filter(|&i| header[i] != ' ' && (i == 0 || header[i - 1] == ' ')).collect();
    let text = |i: usize| header[i..].iter().take_while(|c| **c != ' ').collect::<String>();
    let at = starts.iter().position(|&i| text(i).starts_with(column))?;
    let from = starts[at];
    let to = starts.get(at + 1).copied().unwrap_or(line.len()).min(line.len());
    Some(line.get(from..to)?.iter().collect::<String>().trim().to_string())
}

/// The first number of a cell (`12 +3` is 12).
pub fn total(cell: &str) -> Option<u64> {
    cell.split_whitespace().next()?.parse().ok()
}

/// Waits until `path` exists and holds a line containing `needle`; returns the file's text.
pub fn wait_for_file_line(path: &PathBuf, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l.contains(needle)) {
            return text;
        }
        if Instant::now() >= deadline {
            panic!("no line with {needle:?} in {} within {within:?}; it holds:\n{text}", path.display());
        }
        sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_cell_under_its_header() {
        let screen =
            "WORKLOAD    PID   GC        RST-SENT\napi\\u{1b}[7m 42    12 +3     0\nrst         7     0         10\n";
        assert_eq!(cell(screen, "WORKLOAD", "api", "GC").as_deref(), Some("12 +3"));
        assert_eq!(cell(screen, "WORKLOAD", "rst", "RST-SENT").as_deref(), Some("10"));
        assert_eq!(total("12 +3"), Some(12));
        assert_eq!(cell(screen, "WORKLOAD", "nobody", "GC"), None);
    }
}
