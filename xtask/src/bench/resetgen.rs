//! The reset generator, `cargo xtask __resetgen` (hidden): connects `--count`
//! times to a closed port on 127.0.0.1 at `--rate` per second, paced, and
//! prints one JSON line: `count`, `refused`, `elapsed_ns` and its own `cpu_ns`.
//! Each refused connect is one RST sent (by the kernel, for the closed port)
//! and one received (by the connecting socket).
//!
//! The benchmark runs it inside its namespace with [`run_in`].

use std::{
    io::{ErrorKind, Read as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::{ExitCode, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::sys::{
    resource::{UsageWho, getrusage},
    time::TimeVal,
};
use serde::{Deserialize, Serialize};

use super::{child, netns::Netns};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many connects.
    #[arg(long)]
    count: u64,
    /// Connects per second; 0 means as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// The closed port on 127.0.0.1 (nothing listens on it in a fresh namespace).
    #[arg(long, default_value_t = 9)]
    port: u16,
}

/// What the generator printed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Report {
    pub count: u64,
    /// Connects that failed with ECONNREFUSED.
    pub refused: u64,
    /// From the first connect to the end of the last one.
    pub elapsed_ns: u64,
    /// The generator's CPU time (user + system) over the same stretch: the
    /// kernel's work for each connect and its RSTs (loopback softirq included)
    /// runs in this process's context.
    pub cpu_ns: u64,
}

impl Report {
    pub fn elapsed_s(&self) -> f64 {
        self.elapsed_ns as f64 / 1e9
    }

    pub fn cpu_s(&self) -> f64 {
        self.cpu_ns as f64 / 1e9
    }
}

/// The `__resetgen` subcommand.
pub fn main(args: &Args) -> Result<ExitCode> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let mut refused = 0;
    let cpu_start = cpu_time()?;
    let start = Instant::now();
    for i in 0..args.count {
        if args.rate > 0 {
            // Absolute due times: a late connect does not delay the ones after it.
            let offset_ns = u128::from(i) * 1_000_000_000 / u128::from(args.rate);
            let due = start + Duration::from_nanos(u64::try_from(offset_ns)?);
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
        }
        match TcpStream::connect(addr) {
            Err(err) if err.kind() == ErrorKind::ConnectionRefused => refused += 1,
            Ok(_) => bail!("{addr} accepted a connection: something listens there"),
            Err(err) => bail!("connect {addr}: {err}"),
        }
    }
    let elapsed_ns = u64::try_from(start.elapsed().as_nanos())?;
    let cpu_ns = u64::try_from(cpu_time()?.saturating_sub(cpu_start).as_nanos())?;
    let report = Report { count: args.count, refused, elapsed_ns, cpu_ns };
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// This process's user + system CPU time.
fn cpu_time() -> Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let d = |t: TimeVal| {
        let us = t.tv_sec() * 1_000_000 + t.tv_usec();
        Duration::from_micros(u64::try_from(us).unwrap_or(0))
    };
    Ok(d(usage.user_time()) + d(usage.system_time()))
}

/// Runs `ip netns exec NS <this xtask> __resetgen --count N --rate R` and
/// returns its report; kills it (by pid) if it overruns its time.
pub fn run_in(ns: &Netns, count: u64, rate: u64) -> Result<Report> {
    let exe = std::env::current_exe().context("finding this xtask's executable")?;
    let mut cmd = ns.exec(&exe);
    cmd.args(["__resetgen", "--count", &count.to_string()])
        .args(["--rate", &rate.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut proc = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    // Generous: twice the paced time, plus room for a slow unpaced run.
    let paced_s = count.checked_div(rate).unwrap_or(0);
    let limit = Duration::from_secs(2 * paced_s + 60);
    let status = match child::wait_within(&mut proc, limit) {
        Ok(Some(status)) => status,
        other => {
            child::kill_and_reap(&mut proc);
            other?;
            bail!("{cmd:?} did not finish within {limit:?}");
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = proc.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    serde_json::from_str(out.trim()).with_context(|| format!("resetgen printed {out:?}"))
}
