//! `cargo xtask build`: the agent, release, with its eBPF programs embedded.
//!
//! Set-up is not implied: when bpf-linker or rust-src is missing the agent's
//! build script stops with a message naming `cargo xtask setup`.

use anyhow::{Result, bail};

use crate::{
    cmd::{self, Cmd},
    host,
};

pub fn run() -> Result<()> {
    cmd::step("build: observer (release)", || {
        // observer/build.rs sets RUSTC_BOOTSTRAP=1 for the eBPF build too; setting
        // it here keeps every cargo invocation of a task on the same environment.
        Cmd::cargo().env("RUSTC_BOOTSTRAP", "1").args(["build", "--release", "--package", "observer"]).run()?;
        let bin = host::observer_bin();
        if !bin.is_file() {
            bail!("the build succeeded but {} does not exist", bin.display());
        }
        Ok(bin.display().to_string())
    })
}
