//! `cargo xtask test`: setup, build, and the whole test suite on this machine's
//! kernel, one stage after another, each timed; stops at the first failing stage.

use std::{
    ffi::OsString,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    build,
    cmd::{self, Cmd},
    host, setup,
};

/// The stages, in the order they run. `Deny` checks the licence and
/// dependency policy (`deny.toml`) after the build fetched every crate.
/// `VmTest` runs the kernel-dependent tests again inside VMs booted with
/// Debian's kernels (see `vm.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Setup,
    Build,
    Deny,
    BuildTests,
    Test,
    VmTest,
}

impl Stage {
    const ALL: [Stage; 6] = [Stage::Setup, Stage::Build, Stage::Deny, Stage::BuildTests, Stage::Test, Stage::VmTest];

    fn name(self) -> &'static str {
        match self {
            Stage::Setup => "setup",
            Stage::Build => "build",
            Stage::Deny => "deny",
            Stage::BuildTests => "build-tests",
            Stage::Test => "test",
            Stage::VmTest => "vm-test",
        }
    }

    fn run(self) -> Result<()> {
        match self {
            Stage::Setup => setup::run(),
            Stage::Build => build::run(),
            Stage::VmTest => crate::vm::run(None),
            Stage::Deny => cmd::step("deny: licences, bans, sources (deny.toml)", || {
                // The advisory database would need the network: left out.
                Cmd::cargo().args(["deny", "--locked", "check", "licenses", "bans", "sources"]).run()?;
                Ok("passed".into())
            }),
            Stage::BuildTests => cmd::step("build-tests: observer-e2e (release)", || {
                test_env(Cmd::cargo())?
                    .args(["build", "--release", "--package", "observer-e2e", "--bins", "--tests"])
                    .run()?;
                Ok("built".into())
            }),
            Stage::Test => cmd::step("test: workspace (release)", || {
                // observer-ebpf only builds for the bpf target (observer's build.rs
                // builds it), never as a host test. End-to-end tests share the
                // kernel (network namespaces, tracefs), so one test at a time,
                // and one suite at a time on this machine.
                let _lock = kernel_lock()?;
                test_env(Cmd::cargo())?
                    .args(["test", "--release", "--workspace", "--exclude", "observer-ebpf"])
                    .args(["--no-fail-fast", "--", "--test-threads=1"])
                    .run()?;
                Ok("passed".into())
            }),
        }
    }
}

/// Held while the host's end-to-end tests run: two suites (or a suite and a
/// hand-run test) on one kernel would count each other's probe hits and
/// events. `flock /tmp/observer-kernel.lock cargo test ...` takes the same lock.
const KERNEL_LOCK: &str = "/tmp/observer-kernel.lock";

fn kernel_lock() -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(KERNEL_LOCK)
        .with_context(|| format!("opening {KERNEL_LOCK}"))?;
    if file.try_lock().is_err() {
        eprintln!("==> test: waiting for {KERNEL_LOCK} (another test run on this kernel holds it)");
        file.lock().with_context(|| format!("locking {KERNEL_LOCK}"))?;
    }
    Ok(file)
}

/// The environment of the test binaries (set on their build too, so that
/// building and testing see the same values and nothing rebuilds in between).
pub fn test_env(cmd: Cmd) -> Result<Cmd> {
    let bin = host::observer_bin();
    if !bin.is_file() {
        bail!("{} does not exist: the build stage should have made it", bin.display());
    }
    // Where set-up builds the collector; a test that needs it and finds no
    // binary there fails with a message naming `cargo xtask setup`.
    let mut cmd = cmd
        .env("RUSTC_BOOTSTRAP", "1")
        .env("OBSERVER_E2E_REQUIRED", "1")
        .env("OBSERVER_BIN", OsString::from(bin))
        .env("OBSERVER_OTELCOL", OsString::from(crate::collector::bin()));
    for tool in crate::gotool::ALL {
        cmd = cmd.env(tool.env, OsString::from(tool.bin()));
    }
    Ok(cmd)
}

pub fn run() -> Result<()> {
    let start = Instant::now();
    let mut done: Vec<(Stage, Duration)> = Vec::new();
    for stage in Stage::ALL {
        eprintln!("==> stage {}", stage.name());
        let stage_start = Instant::now();
        let result = stage.run();
        let took = stage_start.elapsed();
        match result {
            Ok(()) => {
                eprintln!("==> stage {}: {}", stage.name(), cmd::secs(took));
                done.push((stage, took));
            }
            Err(err) => {
                eprintln!("==> stage {}: FAILED after {}", stage.name(), cmd::secs(took));
                summary(&done, Some(stage), start.elapsed());
                return Err(err.context(format!("stage {} failed", stage.name())));
            }
        }
    }
    summary(&done, None, start.elapsed());
    Ok(())
}

fn summary(done: &[(Stage, Duration)], failed: Option<Stage>, total: Duration) {
    eprintln!("==> summary");
    for (stage, took) in done {
        eprintln!("    {:<12} {:>8}", stage.name(), cmd::secs(*took));
    }
    if let Some(stage) = failed {
        eprintln!("    {:<12} {:>8}", stage.name(), "FAILED");
    }
    eprintln!("==> total: {}", cmd::secs(total));
}
