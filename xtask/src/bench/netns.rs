//! A network namespace of the benchmark's own, deleted when dropped.

use std::{fs, os::unix::fs::MetadataExt as _, process::Command};

use anyhow::{Context, Result, bail};

/// `ip netns add obs-bench-<pid>` with `lo` up; `ip netns delete` on drop.
pub struct Netns {
    name: String,
    inode: u64,
}

impl Netns {
    pub fn new() -> Result<Self> {
        let name = format!("obs-bench-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        // From here on, Drop deletes it whatever fails next.
        let mut ns = Self { name, inode: 0 };
        let path = format!("/run/netns/{}", ns.name);
        ns.inode = fs::metadata(&path).with_context(|| format!("stat {path}"))?.ino();
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's inode: what the agent reports as `netns`.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// `ip netns exec NAME program`: a command that runs inside the namespace.
    pub fn exec(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = ip(&["netns", "delete", &self.name]) {
            eprintln!("warning: {err:#}");
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!("`ip {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
