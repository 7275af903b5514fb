//! `cargo xtask bench <name>`: benchmarks that print figures and assert nothing.
//!
//! - `resets`: the agent against TCP resets, see [`resets`];
//! - `drops`: the agent against a flood of dropped packets, see [`drops`];
//! - `go`: the Go runtime probes' cost to a Go program and attach latency, see [`go`];
//! - `export`: episodes through an OpenTelemetry Collector: close-to-arrival
//!   latency, spans per second, agent CPU and RSS, see [`export`];
//! - `__resetgen` (hidden, in `main.rs`): the reset generator the benchmark
//!   runs inside its network namespace, see [`resetgen`].

mod bpftrace;
mod child;
mod drops;
mod export;
mod go;
mod interrupt;
mod netns;
mod observer;
mod profile;
mod report;
pub mod resetgen;
mod resets;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use crate::{build, host};

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// TCP resets: events/s and agent CPU per event at several reset rates, and
    /// the kernel-side cost (agent and bpftrace against nothing attached).
    /// Needs root; builds the agent first unless given one (--observer).
    Resets(ResetsArgs),
    /// Dropped packets: a flood of stray RSTs into an nftables `ct state
    /// invalid drop` namespace; the kernel-side cost with the agent attached
    /// against without, events sent vs drops aggregated, agent CPU.
    /// Needs root; builds the agent first unless given one (--observer).
    Drops(DropsArgs),
    /// Go runtime probes: the Go fixture's throughput with the agent attached
    /// against without, uprobe hits per second, and the time from a process's
    /// exec to its probes for many processes started together.
    /// Needs root and Go; builds the agent first unless given one (--observer).
    Go(GoArgs),
    /// Episodes exported over OTLP gRPC to an OpenTelemetry Collector (the
    /// tests' build) while many network namespaces get rounds of reset
    /// bursts: close-to-arrival latency in the collector's file (median,
    /// p99), spans per second, episodes exported vs expected, agent CPU and
    /// peak RSS, the generator's CPU against a run without the agent.
    /// Needs root; builds the agent first unless given one (--observer).
    Export(ExportArgs),
    /// Profiling: the allocation fixture's throughput with CPU sampling at
    /// 19 Hz and with each allocation-sampling method ÷ the agent without
    /// profiling; each program's hits and time per hit; the symbolization
    /// rate. Needs root; builds the agent first unless given one (--observer).
    Profile(ProfileArgs),
}

/// Options of `cargo xtask bench profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// 1 KiB allocations per fixture run.
    #[arg(long, default_value_t = 2_000_000)]
    allocs: u64,
    /// Rounds (each: every configuration once, the order rotating).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// The agent binary to measure; without it `cargo xtask build` runs first.
    #[arg(long, value_name = "PATH")]
    observer: Option<PathBuf>,
    /// Where the figures go as JSON.
    #[arg(long, default_value_os_t = host::workspace_root().join("bench/results/profile.json"))]
    output: PathBuf,
}

/// Options of `cargo xtask bench export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Network namespaces, each its own workload.
    #[arg(long, default_value_t = 200)]
    namespaces: usize,
    /// Rounds of bursts: each namespace yields one episode per round.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Refused connects per namespace per round (each one RST sent, one received).
    #[arg(long, default_value_t = 20)]
    burst: u64,
    /// From the start of one round to the next, in ms (at least twice --quiet-ms).
    #[arg(long, default_value_t = 3000)]
    round_interval_ms: u64,
    /// The agent's `--episode-quiet`, in ms.
    #[arg(long, default_value_t = 1000)]
    quiet_ms: u64,
    /// Runs each way (without the agent, with it; order alternating).
    #[arg(long, default_value_t = 2)]
    repeat: usize,
    /// The agent binary to measure; without it `cargo xtask build` runs first.
    #[arg(long, value_name = "PATH")]
    observer: Option<PathBuf>,
    /// The collector binary; else `OBSERVER_OTELCOL`, else the one `cargo xtask setup` caches.
    #[arg(long, value_name = "PATH")]
    collector: Option<PathBuf>,
    /// Copy the last attached run's collector file (OTLP JSON lines) here.
    #[arg(long, value_name = "PATH")]
    keep_file: Option<PathBuf>,
    /// Where the figures go as JSON.
    #[arg(long, default_value_os_t = host::workspace_root().join("bench/results/export.json"))]
    output: PathBuf,
}

/// Options of `cargo xtask bench go`.
#[derive(Debug, Args)]
pub struct GoArgs {
    /// Allocations of 64 KiB per fixture run.
    #[arg(long, default_value_t = 300_000)]
    allocs: u64,
    /// Rounds (each: one run without the agent, one with it, order alternating).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Processes started together for the attach latency.
    #[arg(long, default_value_t = 100)]
    processes: usize,
    /// The agent binary to measure; without it `cargo xtask build` runs first.
    #[arg(long, value_name = "PATH")]
    observer: Option<PathBuf>,
    /// Where the figures go as JSON.
    #[arg(long, default_value_os_t = host::workspace_root().join("bench/results/go.json"))]
    output: PathBuf,
}

/// Options of `cargo xtask bench drops`.
#[derive(Debug, Args)]
pub struct DropsArgs {
    /// Stray RSTs per run.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Rounds (each: one run without the agent, one with it, order alternating).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// The agent binary to measure; without it `cargo xtask build` runs first.
    #[arg(long, value_name = "PATH")]
    observer: Option<PathBuf>,
    /// Where the figures go as JSON.
    #[arg(long, default_value_os_t = host::workspace_root().join("bench/results/drops.json"))]
    output: PathBuf,
}

/// Options of `cargo xtask bench resets`.
#[derive(Debug, Args)]
pub struct ResetsArgs {
    /// Refused connects per run (each one RST sent and one received).
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// Connect rates per second for the sweep, comma-separated; 0 = unpaced.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000,0")]
    rates: Vec<u64>,
    /// Rounds of the kernel-side comparison (baseline, observer, bpftrace).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// The agent binary to measure, as it is; without it the agent is built
    /// first (`cargo xtask build`) and `target/release/observer` measured.
    #[arg(long, value_name = "PATH")]
    observer: Option<PathBuf>,
    /// Where the figures go as JSON.
    #[arg(long, default_value_os_t = host::workspace_root().join("bench/results/resets.json"))]
    output: PathBuf,
}

/// The agent to measure: the one given (`--observer`), else a fresh
/// release build (`cargo xtask build`).
fn agent_bin(given: Option<&Path>) -> Result<PathBuf> {
    let bin = match given {
        Some(bin) => bin.to_path_buf(),
        None => {
            build::run()?;
            host::observer_bin()
        }
    };
    if !bin.is_file() {
        bail!("{} is not a file", bin.display());
    }
    Ok(bin)
}

pub fn run(bench: Bench) -> Result<ExitCode> {
    match bench {
        Bench::Resets(args) => resets::run(&args),
        Bench::Drops(args) => drops::run(&args),
        Bench::Go(args) => go::run(&args),
        Bench::Export(args) => export::run(&args),
        Bench::Profile(args) => profile::run(&args),
    }
}
