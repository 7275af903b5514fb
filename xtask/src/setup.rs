//! `cargo xtask setup`: installs what building and testing need, idempotently.
//!
//! Each step checks first and does work only when something is missing or at
//! another version, so a second run only checks. Steps: apt packages (LLVM 22
//! for bpf-linker, and the tools the tests use), rust-src (aya-build builds
//! `core` for the bpf target), bpf-linker and cargo-deny at pinned versions,
//! a mounted tracefs (tracepoints attach through it), the OpenTelemetry
//! Collector the end-to-end tests export to (`collector.rs`), and the pinned Go
//! programs the tests run (`gotool.rs`: promtool, helm, Jaeger, kube-apiserver).

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    cmd::{self, Cmd},
    collector, host,
};

/// Debian/Ubuntu packages: LLVM 22 and the libraries bpf-linker links against,
/// then the kernel tools the tests and the troubleshooting steps use.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "bpftool",
    "bpftrace",
    "iproute2",
    "nftables",
    "linux-perf",
    // A real terminal for the live view's tests (tests/tests/live_view.rs).
    "tmux",
    // The oldest Go Debian offers: the Go tests' unsupported-release case.
    "golang-1.19-go",
    // The store under the tests' real kube-apiserver (gotool.rs).
    "etcd-server",
    // `cargo xtask image` builds the container image with it.
    "podman",
];

/// bpf-linker release that matches rustc 1.95's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// cargo-deny release for the licence and dependency policy (`deny.toml`);
/// it declares rust-version 1.88.
pub const CARGO_DENY_VERSION: &str = "0.20.2";
const TRACEFS: &str = "/sys/kernel/tracing";

pub fn run() -> Result<()> {
    let start = Instant::now();
    let root = host::is_root()?;
    if !root {
        eprintln!(
            "note: not running as root: installing apt packages needs root, so that step fails \
             if a package is missing (re-run `cargo xtask setup` as root)"
        );
    }
    cmd::step("setup: apt packages", || apt_install(APT_PACKAGES, root))?;
    cmd::step("setup: rust-src", rust_src)?;
    cmd::step("setup: bpf-linker", bpf_linker)?;
    cmd::step("setup: cargo-deny", cargo_deny)?;
    cmd::step("setup: tracefs", || tracefs(root))?;
    cmd::step("setup: OpenTelemetry Collector", collector::ensure)?;
    for tool in crate::gotool::ALL {
        cmd::step(&format!("setup: {}", tool.name), || tool.ensure())?;
    }
    eprintln!("==> setup: done ({})", cmd::secs(start.elapsed()));
    Ok(())
}

/// Installs the packages that are not installed yet (`apt-get update` only then).
pub fn apt_install(packages: &[&str], root: bool) -> Result<String> {
    let mut missing = Vec::new();
    for &package in packages {
        if !dpkg_installed(package)? {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        return Ok(format!("all {} packages already installed", packages.len()));
    }
    if !root {
        bail!(
            "packages missing: {}; installing them needs root: run `cargo xtask setup` as root \
             (or `apt-get install {}` yourself)",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("    missing: {}", missing.join(" "));
    Cmd::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").arg("update").run()?;
    Cmd::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .run()?;
    let still: Vec<&str> = missing.iter().copied().filter(|p| !matches!(dpkg_installed(p), Ok(true))).collect();
    if !still.is_empty() {
        bail!("apt-get finished but these are still not installed: {}", still.join(" "));
    }
    Ok(format!("installed {}", missing.join(" ")))
}

/// `dpkg-query -W -f='${Status}' PACKAGE` says `install ok installed`.
fn dpkg_installed(package: &str) -> Result<bool> {
    let Some(out) = Cmd::new("dpkg-query").args(["-W", "-f=${Status}", package]).probe()? else {
        bail!("dpkg-query not found: the set-up's apt step needs Debian or Ubuntu");
    };
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "install ok installed")
}

fn rust_src() -> Result<String> {
    let core = sysroot()?.join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        return Ok("already installed".into());
    }
    eprintln!("    missing: {}", core.display());
    // rustup's output goes straight to the terminal, so a failure shows its exact error.
    Cmd::new("rustup").args(["component", "add", "rust-src"]).run().context(
        "the eBPF build needs rust-src (it builds `core` for the bpf target): rustup's \
             error is above; fix that and re-run `cargo xtask setup`",
    )?;
    if !core.is_dir() {
        bail!("`rustup component add rust-src` succeeded but {} is still missing", core.display());
    }
    Ok("installed".into())
}

/// `rustc --print sysroot`.
fn sysroot() -> Result<PathBuf> {
    let Some(out) = Cmd::new("rustc").args(["--print", "sysroot"]).probe()? else {
        bail!("`rustc` not found on PATH");
    };
    if !out.status.success() {
        bail!("`rustc --print sysroot` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn bpf_linker() -> Result<String> {
    match bpf_linker_version()? {
        Some(v) if v == BPF_LINKER_VERSION => return Ok(format!("{v} already installed")),
        Some(v) => eprintln!("    found bpf-linker {v}, want {BPF_LINKER_VERSION}"),
        None => eprintln!("    bpf-linker not found"),
    }
    Cmd::cargo()
        .path_prepend(&Path::new(LLVM_PREFIX).join("bin"))
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--locked", "--no-default-features", "--features", "llvm-22"])
        .run()
        .context("installing bpf-linker")?;
    match bpf_linker_version()? {
        Some(v) if v == BPF_LINKER_VERSION => Ok(format!("installed {v}")),
        found => bail!(
            "installed bpf-linker {BPF_LINKER_VERSION} but `bpf-linker --version` reports {}: \
             another bpf-linker comes first on PATH",
            found.as_deref().unwrap_or("nothing")
        ),
    }
}

/// The version `bpf-linker --version` reports ("bpf-linker 0.13.0"), if it runs.
fn bpf_linker_version() -> Result<Option<String>> {
    let Some(out) = Cmd::new("bpf-linker").arg("--version").probe()? else {
        return Ok(None);
    };
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().nth(1).map(str::to_owned))
}

fn cargo_deny() -> Result<String> {
    match cargo_deny_version()? {
        Some(v) if v == CARGO_DENY_VERSION => return Ok(format!("{v} already installed")),
        Some(v) => eprintln!("    found cargo-deny {v}, want {CARGO_DENY_VERSION}"),
        None => eprintln!("    cargo-deny not found"),
    }
    Cmd::cargo()
        .args(["install", "cargo-deny", "--version", CARGO_DENY_VERSION, "--locked"])
        .run()
        .context("installing cargo-deny")?;
    match cargo_deny_version()? {
        Some(v) if v == CARGO_DENY_VERSION => Ok(format!("installed {v}")),
        found => bail!(
            "installed cargo-deny {CARGO_DENY_VERSION} but `cargo deny --version` reports {}: \
             another cargo-deny comes first on PATH",
            found.as_deref().unwrap_or("nothing")
        ),
    }
}

/// The version `cargo deny --version` reports ("cargo-deny 0.20.2"), if it runs.
fn cargo_deny_version() -> Result<Option<String>> {
    let Some(out) = Cmd::cargo().args(["deny", "--version"]).probe()? else {
        return Ok(None);
    };
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().nth(1).map(str::to_owned))
}

fn tracefs(root: bool) -> Result<String> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(format!("mounted at {TRACEFS}"));
    }
    if !root {
        // Not fatal: the agent mounts tracefs itself when it runs as root.
        return Ok(format!(
            "not mounted at {TRACEFS}, and mounting needs root: left to the agent \
             (it mounts tracefs when run as root), or run `mount -t tracefs nodev {TRACEFS}`"
        ));
    }
    Cmd::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]).run()?;
    Ok(format!("mounted at {TRACEFS}"))
}
