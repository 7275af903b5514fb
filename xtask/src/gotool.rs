//! Go programs the tests use that Debian does not package at the release
//! we need (promtool), `go install`ed at a pinned version into the cache
//! (`~/.cache/observer/NAME-VERSION/`) once, and reused from there.

use std::{fs, path::PathBuf};

use anyhow::{Context, Result};

use crate::{cmd::Cmd, collector};

/// One pinned Go program.
pub struct GoTool {
    /// The binary's file name.
    pub name: &'static str,
    /// The package `go install` builds.
    pub package: &'static str,
    /// Its module's version.
    pub version: &'static str,
    /// The test environment variable that names the binary.
    pub env: &'static str,
}

/// Prometheus' `promtool`, for `promtool check metrics` on a real scrape
/// (Prometheus 3.16 is module version v0.316.0).
pub const PROMTOOL: GoTool = GoTool {
    name: "promtool",
    package: "github.com/prometheus/prometheus/cmd/promtool",
    version: "v0.316.0",
    env: "OBSERVER_PROMTOOL",
};

impl GoTool {
    fn dir(&self) -> PathBuf {
        // Beside the collector's cache directory.
        let base = collector::cache_dir().parent().map(PathBuf::from).unwrap_or_default();
        base.join(format!("{}-{}", self.name, self.version.trim_start_matches('v')))
    }

    pub fn bin(&self) -> PathBuf {
        self.dir().join(self.name)
    }

    /// What the stamp beside the binary says once it is installed: `go
    /// install` leaves no version in such a binary to ask it for.
    fn stamp(&self) -> String {
        format!("{}@{}\n", self.package, self.version)
    }

    /// The set-up step: installed unless it is there at this version.
    pub fn ensure(&self) -> Result<String> {
        let dir = self.dir();
        let stamp = dir.join("installed");
        let bin = self.bin();
        if bin.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s == self.stamp()) {
            return Ok(format!("{} {} already installed at {}", self.name, self.version, bin.display()));
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Cmd::new("go")
            .env("GOBIN", &dir)
            .args(["install", &format!("{}@{}", self.package, self.version)])
            .run()
            .with_context(|| format!("installing {} (is the Go toolchain installed?)", self.name))?;
        fs::write(&stamp, self.stamp()).with_context(|| format!("writing {}", stamp.display()))?;
        Ok(format!("installed {} {} at {}", self.name, self.version, bin.display()))
    }
}
