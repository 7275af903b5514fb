//! `cargo xtask bench resets`: the procedure. In one fresh network namespace,
//!
//! 1. the rate sweep: for each rate, one agent started for that rate alone,
//!    N refused connects at that rate, then the agent stopped; its events of
//!    this namespace counted against the 2 × N expected, its CPU time per event;
//! 2. the kernel-side cost: N unpaced connects with nothing attached, with the
//!    agent attached, with bpftrace counting the same tracepoint; repeated,
//!    the order rotated each round, medians compared with the baseline.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Result, bail};

use super::{
    ResetsArgs,
    bpftrace::{self, Bpftrace},
    interrupt,
    netns::Netns,
    observer::{self, Observer, Stopped},
    report::{self, Config, Overhead, RateRow, Results, Run},
    resetgen,
};
use crate::host;

pub fn run(args: &ResetsArgs) -> Result<ExitCode> {
    if !host::is_root()? {
        bail!("bench resets needs root (network namespaces, eBPF): run it with sudo");
    }
    if args.count == 0 || args.repeat == 0 || args.rates.is_empty() {
        bail!("--count and --repeat must be at least 1, and --rates must name a rate");
    }
    let bin = super::agent_bin(args.observer.as_deref())?;
    interrupt::install()?;
    let scratch = Scratch(host::workspace_root().join("bench/results/resets-observer.tmp"));
    let ns = Netns::new()?;
    eprintln!("==> bench resets: namespace {} (netns {}), {} connects per run", ns.name(), ns.inode(), args.count);

    let mut rates = Vec::new();
    for &rate in &args.rates {
        interrupt::check()?;
        let row = rate_run(&bin, &scratch.0, &ns, args.count, rate)?;
        eprintln!("    {}", row.progress());
        rates.push(row);
    }

    let overhead = overhead(&bin, &scratch.0, &ns, args)?;
    let results = Results::new(args.count, rates, overhead)?;
    print!("{}", results.table());
    let json = serde_json::to_string_pretty(&results.to_json())? + "\n";
    report::write_atomically(&args.output, &json)?;
    eprintln!("==> wrote {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// One rate of the sweep, with its own agent.
fn rate_run(bin: &Path, scratch: &Path, ns: &Netns, count: u64, rate: u64) -> Result<RateRow> {
    let (generated, agent, (sent, received)) = attached(bin, &scratch.join(format!("rate-{rate}")), ns, count, rate)?;
    Ok(RateRow { rate, generated, sent, received, agent })
}

/// `count` connects at `rate` with an agent attached for them alone, writing
/// into `dir` (removed after): what the generator said, what the agent said,
/// and the agent's (sent, received) resets of the bench namespace.
fn attached(
    bin: &Path,
    dir: &Path,
    ns: &Netns,
    count: u64,
    rate: u64,
) -> Result<(resetgen::Report, Stopped, (u64, u64))> {
    let agent = Observer::start(bin, dir)?;
    let generated = resetgen::run_in(ns, count, rate)?;
    let stopped = agent.stop()?;
    let resets = observer::count_resets(dir, ns.inode())?;
    fs::remove_dir_all(dir)?;
    Ok((generated, stopped, resets))
}

/// The kernel-side cost at the unpaced rate.
fn overhead(bin: &Path, scratch: &Path, ns: &Netns, args: &ResetsArgs) -> Result<Overhead> {
    let tracer = bpftrace::find();
    let mut configs = vec![Config::Baseline, Config::Observer];
    match &tracer {
        Ok(_) => configs.push(Config::Bpftrace),
        Err(why) => eprintln!("    bpftrace: {why}; its ratio will be null"),
    }
    // One unrecorded run first, so that the first recorded one is not the cold one.
    interrupt::check()?;
    resetgen::run_in(ns, args.count, 0)?;
    let mut runs = Vec::new();
    for round in 0..args.repeat {
        for i in 0..configs.len() {
            interrupt::check()?;
            let config = configs[(round + i) % configs.len()];
            let run = match (config, &tracer) {
                (Config::Baseline, _) => Run::new(round, config, resetgen::run_in(ns, args.count, 0)?),
                (Config::Observer, _) => {
                    let dir = scratch.join(format!("overhead-{round}"));
                    let (generated, stopped, (sent, received)) = attached(bin, &dir, ns, args.count, 0)?;
                    Run::new(round, config, generated).with_agent(stopped, sent + received)
                }
                (Config::Bpftrace, Ok(path)) => {
                    let tracer = Bpftrace::start(path)?;
                    let generated = resetgen::run_in(ns, args.count, 0)?;
                    let counted = tracer.stop()?;
                    Run::new(round, config, generated).with_bpftrace(counted)
                }
                (Config::Bpftrace, Err(_)) => continue,
            };
            eprintln!("    {}", run.progress());
            runs.push(run);
        }
    }
    Ok(Overhead { runs, bpftrace_missing: tracer.err() })
}

/// The agents' output directories, removed at the end whatever happens.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.0.exists()
            && let Err(err) = fs::remove_dir_all(&self.0)
        {
            eprintln!("warning: removing {}: {err}", self.0.display());
        }
    }
}
