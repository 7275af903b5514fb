//! The Go fixture (`tests/fixtures/gofixture`) built with the machine's `go`
//! for the benches and the VM tests (whose guest has no toolchain to fetch
//! and compiles slowly under emulation).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::host;

/// The fixture built as `dir/name` (`name` is also its comm, so at most 15
/// bytes), rebuilt when a source file is newer.
pub fn build(dir: &Path, name: &str) -> Result<PathBuf> {
    build_program("gofixture", None, dir, name)
}

/// The Go program of `tests/fixtures/<program>` built as [`build`] builds
/// the fixture, with build tag `tag` if given.
pub fn build_program(program: &str, tag: Option<&str>, dir: &Path, name: &str) -> Result<PathBuf> {
    let src = host::workspace_root().join("tests/fixtures").join(program);
    let bin = dir.join(name);
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let built = modified(&bin);
    let stale = fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .flatten()
        .any(|e| built.is_none() || modified(&e.path()) > built);
    if !stale {
        return Ok(bin);
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("==> building the Go fixture into {}", bin.display());
    let status = Command::new("go")
        .arg("build")
        .args(tag.map(|t| ["-tags", t]).iter().flatten())
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .status()
        .context("running go (is the Go toolchain installed?)")?;
    if !status.success() {
        bail!("go build of {} failed ({status})", src.display());
    }
    Ok(bin)
}
