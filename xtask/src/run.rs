//! `cargo xtask run [-- ARGS...]`: setup, build, then `observer run ARGS...`.

use std::process::ExitCode;

use anyhow::Result;

use crate::{build, cmd::Cmd, host, setup};

pub fn run(args: &[String]) -> Result<ExitCode> {
    setup::run()?;
    build::run()?;
    let bin = host::observer_bin();
    // The agent needs root (or CAP_BPF + CAP_PERFMON): go through sudo only when
    // not already root. exec, so Ctrl-C and SIGTERM reach the agent directly.
    let cmd = if host::is_root()? { Cmd::new(&bin) } else { Cmd::new("sudo").arg(&bin) };
    Err(cmd.arg("run").args(args).exec())
}
