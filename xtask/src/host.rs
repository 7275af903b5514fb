//! Facts about this machine and this workspace that every task needs.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// The workspace root (the directory above `xtask/`).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (or `CARGO_BUILD_TARGET_DIR`)
/// when set, relative paths taken from the workspace root; else `<root>/target`.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .iter()
        .find_map(|name| env::var_os(name).filter(|v| !v.is_empty()))
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"))
}

/// The release build of the agent.
pub fn observer_bin() -> PathBuf {
    target_dir().join("release").join("observer")
}

/// The cargo that runs this xtask (cargo sets `CARGO`), else `cargo` from PATH.
pub fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `$CARGO_HOME/bin`, by default `~/.cargo/bin`: where rustup and
/// `cargo install` put their binaries.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(home.join("bin"))
}

/// PATH for child processes: this process's PATH with `~/.cargo/bin` put first
/// when it is missing, so a freshly installed bpf-linker is found.
pub fn child_path() -> OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&current).collect();
    if let Some(bin) = cargo_bin_dir()
        && !dirs.contains(&bin)
    {
        dirs.insert(0, bin);
    }
    env::join_paths(dirs).unwrap_or(current)
}

/// Whether this process runs with effective uid 0 (from `/proc/self/status`).
pub fn is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) else {
        bail!("/proc/self/status has no Uid line");
    };
    // "Uid:\treal\teffective\tsaved\tfs"
    match line.split_whitespace().nth(2) {
        Some(euid) => Ok(euid == "0"),
        None => bail!("cannot parse {line:?} in /proc/self/status"),
    }
}
