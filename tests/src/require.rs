//! Whether an end-to-end test can run here: the agent binary and root.
//!
//! Missing prerequisites skip the test with a `SKIPPED: <reason>` line, unless
//! `OBSERVER_E2E_REQUIRED=1` says this run must exercise the agent (CI), in
//! which case they fail it.

use std::io::Write;
use std::path::PathBuf;

/// The agent binary, or `None` after reporting why the test is skipped.
pub fn require_bin() -> Option<PathBuf> {
    match find_bin() {
        Ok(bin) => Some(bin),
        Err(reason) => skip(&reason),
    }
}

/// The agent binary when we are also root, or `None` after reporting why the
/// test is skipped.
pub fn require_root_and_bin() -> Option<PathBuf> {
    let bin = require_bin()?;
    if !nix::unistd::geteuid().is_root() {
        return skip("not running as root (euid != 0)");
    }
    Some(bin)
}

fn find_bin() -> Result<PathBuf, String> {
    let Some(value) = std::env::var_os("OBSERVER_BIN") else {
        return Err("OBSERVER_BIN is not set".into());
    };
    let bin = PathBuf::from(value);
    if !bin.is_absolute() {
        return Err(format!("OBSERVER_BIN={} is not an absolute path", bin.display()));
    }
    if !bin.is_file() {
        return Err(format!("OBSERVER_BIN={} does not exist", bin.display()));
    }
    Ok(bin)
}

/// The file an environment variable names (an absolute path to an existing
/// file), or `None` after reporting why the test is skipped (a failure under
/// `OBSERVER_E2E_REQUIRED=1`). `how` says how to get it.
pub fn require_file_env(var: &str, how: &str) -> Option<PathBuf> {
    let path = match std::env::var_os(var) {
        None => return skip(&format!("{var} is not set ({how})")),
        Some(v) => PathBuf::from(v),
    };
    if !path.is_absolute() || !path.is_file() {
        return skip(&format!("{var}={} is not an existing file at an absolute path ({how})", path.display()));
    }
    Some(path)
}

fn required() -> bool {
    std::env::var("OBSERVER_E2E_REQUIRED").is_ok_and(|v| v == "1")
}

/// `path` exists, or `None` after reporting why the test is skipped (a
/// failure under `OBSERVER_E2E_REQUIRED=1`).
pub fn require_path(path: &std::path::Path, why: &str) -> Option<()> {
    if path.exists() {
        return Some(());
    }
    skip(&format!("{} is missing ({why})", path.display()))
}

/// Reports why the test is skipped (a failure under `OBSERVER_E2E_REQUIRED=1`).
pub fn skip<T>(reason: &str) -> Option<T> {
    if required() {
        panic!("OBSERVER_E2E_REQUIRED=1 but {reason}");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!`
    // of passing tests, and a skip must stay visible.
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason} ({test})");
    None
}
