//! `cargo xtask bench go`: what the Go runtime probes cost a Go program, how
//! often they fire, and how soon a new Go process gets them.
//!
//! 1. Throughput: the Go fixture (`tests/fixtures/gofixture`, built here with
//!    the machine's `go`) does a fixed amount of work, `--allocs` allocations
//!    of 64 KiB. Rounds alternate "nothing attached" and "agent attached"
//!    (the fixture waits on stdin until the agent says it attached, so the
//!    whole work runs under the probes). Wall time of the work and the
//!    process's CPU time; throughput attached ÷ baseline from the medians.
//!    During the attached runs `kernel.bpf_stats_enabled` is on (and put back
//!    as it was after): the run counts of the agent's `go_*` programs over
//!    the work give uprobe hits per second and the programs' own time per hit.
//! 2. Attach latency: `--processes` fixtures started together under one
//!    agent; for each, the time from its exec (the `sched_process_exec`
//!    tracepoint's timestamp) to the end of its attach (all its probes in
//!    place), from the agent's debug line. Also how long the agent then takes
//!    to stop (it lets go of every probe).

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::Write as _,
    path::Path,
    process::{Child, ChildStdin, Command, ExitCode, Stdio},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::sys::resource::{UsageWho, getrusage};
use serde_json::json;

use super::{GoArgs, child, interrupt, observer::Observer, report};
use crate::host;

/// The fixture's name here, and so its comm (at most 15 bytes).
const COMM: &str = "gobench-fixture";
const ALLOC_SIZE: &str = "65536";
const READY_WITHIN: Duration = Duration::from_secs(30);
const ATTACH_WITHIN: Duration = Duration::from_secs(60);
const WORK_WITHIN: Duration = Duration::from_secs(600);
/// Stopping lets go of every probe, one kernel grace period each.
const STOP_WITHIN: Duration = Duration::from_secs(600);

pub fn run(args: &GoArgs) -> Result<ExitCode> {
    if !host::is_root()? {
        bail!("bench go needs root (eBPF, uprobes, kernel.bpf_stats_enabled): run it with sudo");
    }
    if args.allocs == 0 || args.repeat == 0 || args.processes == 0 {
        bail!("--allocs, --repeat and --processes must be at least 1");
    }
    let bin = super::agent_bin(args.observer.as_deref())?;
    interrupt::install()?;
    let fixture = crate::gofixture::build(&host::target_dir().join("bench"), COMM)?;
    let scratch = host::workspace_root().join("bench/results/go-observer.tmp");
    let agent_args = ["--go-process", COMM, "--log-level", "debug"];
    eprintln!(
        "==> bench go: {} allocations of {ALLOC_SIZE} B per run, {} rounds; then {} processes started together",
        args.allocs, args.repeat, args.processes
    );

    // One unrecorded run first, so that the first recorded one is not the cold one.
    work(&fixture, args.allocs, None)?;
    let mut baseline = Vec::new();
    let mut attached = Vec::new();
    let mut single_latency = Vec::new();
    for round in 0..args.repeat {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for with_agent in order {
            interrupt::check()?;
            if !with_agent {
                let w = work(&fixture, args.allocs, None)?;
                eprintln!("    round {round} baseline: {:.3} s wall, {:.3} s cpu", w.wall_s(), w.cpu_s());
                baseline.push(json!({"round": round, "wall_s": w.wall_s(), "cpu_s": w.cpu_s()}));
                continue;
            }
            let agent = Observer::start_with(&bin, &scratch, &agent_args)?;
            let stats = BpfStats::enable()?;
            let w = work(&fixture, args.allocs, Some(&agent))?;
            drop(stats);
            let stopped = agent.stop_within(STOP_WITHIN)?;
            fs::remove_dir_all(&scratch).ok();
            let hits = w.hits.unwrap_or_default();
            let hits_per_s = hits.runs as f64 / w.wall_s();
            let ns_per_hit = (hits.runs > 0).then(|| hits.run_time_ns as f64 / hits.runs as f64);
            single_latency.extend(w.latency_us);
            eprintln!(
                "    round {round} observer: {:.3} s wall, {:.3} s cpu; {} uprobe hits ({hits_per_s:.0}/s, {} ns each in the programs); attached {} after exec",
                w.wall_s(),
                w.cpu_s(),
                hits.runs,
                ns_per_hit.map_or("-".into(), |n| format!("{n:.0}")),
                w.latency_us.map_or("?".into(), |us| format!("{:.1} ms", us as f64 / 1e3)),
            );
            attached.push(json!({
                "round": round, "wall_s": w.wall_s(), "cpu_s": w.cpu_s(),
                "uprobe_hits": hits.runs, "uprobe_hits_per_s": hits_per_s, "program_ns_per_hit": ns_per_hit,
                "attach_latency_ms": w.latency_us.map(|us| us as f64 / 1e3),
                "agent_cpu_s": stopped.cpu.as_secs_f64(), "agent_lost": stopped.lost,
            }));
        }
    }
    interrupt::check()?;
    let latency = together(&bin, &scratch, &fixture, args.processes, &agent_args)?;
    fs::remove_dir_all(&scratch).ok();

    let med = report::median_field;
    let (b_wall, a_wall) = (med(&baseline, "wall_s"), med(&attached, "wall_s"));
    let (b_cpu, a_cpu) = (med(&baseline, "cpu_s"), med(&attached, "cpu_s"));
    let hits_per_s = med(&attached, "uprobe_hits_per_s");
    let ns_per_hit = med(&attached, "program_ns_per_hit");
    let lat = latency.summary();
    let results = json!({
        "bench": "go",
        "allocs_per_run": args.allocs,
        "alloc_size_bytes": ALLOC_SIZE.parse::<u64>().unwrap_or(0),
        "rounds": args.repeat,
        "median": {
            "baseline_wall_s": b_wall, "observer_wall_s": a_wall,
            "throughput_ratio": b_wall / a_wall,
            "baseline_cpu_s": b_cpu, "observer_cpu_s": a_cpu,
            "cpu_ratio": a_cpu / b_cpu,
            "uprobe_hits_per_s": hits_per_s, "program_ns_per_hit": ns_per_hit,
            "single_attach_latency_ms": report::median_of(single_latency.iter().map(|&us| us as f64 / 1e3).collect()),
        },
        "attach_latency": lat,
        "baseline": baseline,
        "observer": attached,
    });
    println!("bench go ({} allocations of {ALLOC_SIZE} B per run, medians of {} rounds):", args.allocs, args.repeat);
    println!(
        "  throughput: {:.3} s without, {:.3} s with observer: x{:.3} of the baseline's allocations/s",
        b_wall,
        a_wall,
        b_wall / a_wall
    );
    println!("  fixture cpu: {b_cpu:.3} s without, {a_cpu:.3} s with observer: x{:.3}", a_cpu / b_cpu);
    println!("  uprobe hits: {hits_per_s:.0}/s while attached, {ns_per_hit:.0} ns each in the programs");
    println!(
        "  exec to attached, {} processes started together: {} attached; median {:.1} ms, p90 {:.1} ms, max {:.1} ms; agent stop {:.1} s",
        latency.started,
        latency.latency_us.len(),
        lat["median_ms"].as_f64().unwrap_or(f64::NAN),
        lat["p90_ms"].as_f64().unwrap_or(f64::NAN),
        lat["max_ms"].as_f64().unwrap_or(f64::NAN),
        latency.stop.as_secs_f64()
    );
    report::write_atomically(&args.output, &(serde_json::to_string_pretty(&results)? + "\n"))?;
    eprintln!("==> wrote {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

/// Run counts of the agent's `go_*` programs.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Hits {
    pub runs: u64,
    pub run_time_ns: u64,
}

/// One fixture run's work.
struct Work {
    wall: Duration,
    cpu: Duration,
    hits: Option<Hits>,
    /// From the agent's debug line for the process.
    latency_us: Option<u64>,
}

impl Work {
    fn wall_s(&self) -> f64 {
        self.wall.as_secs_f64()
    }
    fn cpu_s(&self) -> f64 {
        self.cpu.as_secs_f64()
    }
}

/// Starts a `-wait-stdin` fixture, waits for the agent (if any) to attach to
/// it, then times its work to its exit.
fn work(fixture: &Path, allocs: u64, agent: Option<&Observer>) -> Result<Work> {
    let allocs = allocs.to_string();
    let args = ["-wait-stdin", "-allocs", &allocs, "-alloc-size", ALLOC_SIZE, "-settle", "0s"];
    let (mut proc, stdin, _stdout, pid) = start_fixture(fixture, &args)?;
    let mut said = Vec::new();
    if let Some(agent) = agent {
        let attached = format!("observer: go: attached pid={pid} ");
        agent
            .wait_for(|l| l.starts_with(&attached), ATTACH_WITHIN, &mut said)
            .with_context(|| format!("the agent did not attach to pid {pid}; it said:\n{}", said.join("\n")))?;
    }
    let before = agent.map(|a| program_runs(a.pid())).transpose()?;
    let cpu_before = children_cpu()?;
    let started = Instant::now();
    go(stdin)?;
    let status = child::wait_within(&mut proc, WORK_WITHIN)?;
    let wall = started.elapsed();
    let cpu = children_cpu()?.saturating_sub(cpu_before);
    let Some(status) = status else {
        child::kill_and_reap(&mut proc);
        bail!("the fixture (pid {pid}) still ran after {WORK_WITHIN:?}");
    };
    if !status.success() {
        bail!("the fixture (pid {pid}) exited with {status}");
    }
    let hits = match (agent, before) {
        (Some(agent), Some(before)) => {
            let after = program_runs(agent.pid())?;
            Some(Hits { runs: after.runs - before.runs, run_time_ns: after.run_time_ns - before.run_time_ns })
        }
        _ => None,
    };
    // The debug line comes right after the attach line.
    if let Some(agent) = agent {
        let _ = agent.wait_for(|l| latency_line(l).is_some_and(|(p, _)| p == pid), Duration::from_secs(5), &mut said);
    }
    let latency_us = said.iter().filter_map(|l| latency_line(l)).find(|(p, _)| *p == pid).map(|(_, us)| us);
    Ok(Work { wall, cpu, hits, latency_us })
}

pub(super) type Started = (Child, ChildStdin, Receiver<String>, u32);

/// Spawns the fixture with `args` and waits for its `ready pid=N`.
pub(super) fn start_fixture(fixture: &Path, args: &[&str]) -> Result<Started> {
    let mut proc = Command::new(fixture)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawning {}", fixture.display()))?;
    let (Some(stdin), Some(stdout)) = (proc.stdin.take(), proc.stdout.take()) else {
        child::kill_and_reap(&mut proc);
        bail!("no pipes to the fixture");
    };
    let stdout = child::lines(stdout);
    let mut seen = Vec::new();
    let ready = child::wait_for_line(&stdout, |l| l.starts_with("ready pid="), READY_WITHIN, &mut seen);
    let pid = ready.ok().and_then(|l| l.strip_prefix("ready pid=")?.trim().parse().ok());
    let Some(pid) = pid else {
        child::kill_and_reap(&mut proc);
        bail!("the fixture did not say `ready pid=N`: {seen:?}");
    };
    Ok((proc, stdin, stdout, pid))
}

pub(super) fn go(mut stdin: ChildStdin) -> Result<()> {
    stdin.write_all(b"go\n").context("writing to the fixture's stdin")?;
    stdin.flush().context("writing to the fixture's stdin")
}

/// CPU time (user + system) of this process's reaped children so far.
pub(super) fn children_cpu() -> Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let d = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    Ok(d(usage.user_time()) + d(usage.system_time()))
}

/// `go: pid P attached N us after its exec` (the agent's debug line).
fn latency_line(line: &str) -> Option<(u32, u64)> {
    let rest = &line[line.find("go: pid ")? + "go: pid ".len()..];
    let mut words = rest.split_whitespace();
    let pid = words.next()?.parse().ok()?;
    (words.next()? == "attached").then_some(())?;
    let us = words.next()?.parse().ok()?;
    (words.next()? == "us").then_some((pid, us))
}

/// Summed run counts and run time of the agent's programs named `go_*`.
fn program_runs(agent: u32) -> Result<Hits> {
    let mut hits = Hits::default();
    for (name, h) in programs_runs(agent)? {
        if name.starts_with("go_") {
            hits.runs += h.runs;
            hits.run_time_ns += h.run_time_ns;
        }
    }
    Ok(hits)
}

/// Run counts and run time of each of the agent's programs, by name (the
/// ids from its descriptors, the counts from `bpftool prog show`).
pub(super) fn programs_runs(agent: u32) -> Result<HashMap<String, Hits>> {
    let dir = format!("/proc/{agent}/fdinfo");
    let mut ids: HashSet<u64> = HashSet::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?.flatten() {
        let Ok(info) = fs::read_to_string(entry.path()) else { continue };
        if let Some(id) = info.lines().find_map(|l| l.strip_prefix("prog_id:")).and_then(|v| v.trim().parse().ok()) {
            ids.insert(id);
        }
    }
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().context("running bpftool")?;
    if !out.status.success() {
        bail!("bpftool prog show: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    let mut hits: HashMap<String, Hits> = HashMap::new();
    for p in progs.as_array().into_iter().flatten() {
        let ours = p["id"].as_u64().is_some_and(|id| ids.contains(&id));
        if let (true, Some(name)) = (ours, p["name"].as_str()) {
            let h = hits.entry(name.to_string()).or_default();
            h.runs += p["run_cnt"].as_u64().unwrap_or(0);
            h.run_time_ns += p["run_time_ns"].as_u64().unwrap_or(0);
        }
    }
    Ok(hits)
}

/// `kernel.bpf_stats_enabled` on while it lives, then as it was.
pub(super) struct BpfStats {
    was: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub(super) fn enable() -> Result<Self> {
        let was = fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?.trim().to_string();
        fs::write(BPF_STATS, "1").with_context(|| format!("writing 1 to {BPF_STATS}"))?;
        Ok(Self { was })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(err) = fs::write(BPF_STATS, &self.was) {
            eprintln!("warning: putting {BPF_STATS} back to {}: {err}", self.was);
        }
    }
}

/// What starting processes together showed.
struct Together {
    started: usize,
    latency_us: Vec<u64>,
    /// From SIGTERM to the agent's exit, all those probes still attached.
    stop: Duration,
}

impl Together {
    fn summary(&self) -> serde_json::Value {
        let mut ms: Vec<f64> = self.latency_us.iter().map(|&us| us as f64 / 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms.get(((ms.len() as f64 - 1.0) * q).round() as usize).copied();
        json!({
            "processes": self.started, "attached": ms.len(),
            "min_ms": at(0.0), "median_ms": report::median(&ms), "p90_ms": at(0.9), "max_ms": at(1.0),
            "agent_stop_s": self.stop.as_secs_f64(),
        })
    }
}

/// `count` fixtures started at once under one agent; each one's exec to
/// attach time. They idle until killed (our children, by pid).
fn together(bin: &Path, scratch: &Path, fixture: &Path, count: usize, agent_args: &[&str]) -> Result<Together> {
    let agent = Observer::start_with(bin, scratch, agent_args)?;
    let mut procs: Vec<Child> = Vec::with_capacity(count);
    let spawned = (0..count).try_for_each(|_| {
        let proc = Command::new(fixture)
            .args(["-duration", "10m", "-settle", "0s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", fixture.display()))?;
        procs.push(proc);
        anyhow::Ok(())
    });
    let pids: HashSet<u32> = procs.iter().map(Child::id).collect();
    let mut latency: HashMap<u32, u64> = HashMap::new();
    let mut said = Vec::new();
    let deadline = Instant::now() + ATTACH_WITHIN;
    while spawned.is_ok() && latency.len() < pids.len() && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut lines = Vec::new();
        if agent.wait_for(|l| latency_line(l).is_some_and(|(p, _)| pids.contains(&p)), left, &mut lines).is_err() {
            break;
        }
        latency.extend(lines.iter().filter_map(|l| latency_line(l)).filter(|(p, _)| pids.contains(p)));
        said.extend(lines);
    }
    for proc in &mut procs {
        child::kill_and_reap(proc);
    }
    spawned?;
    let stopping = Instant::now();
    agent.stop_within(STOP_WITHIN)?;
    let stop = stopping.elapsed();
    if latency.len() < pids.len() {
        eprintln!(
            "    {} of {} processes were not attached within {ATTACH_WITHIN:?}",
            pids.len() - latency.len(),
            pids.len()
        );
    }
    Ok(Together { started: pids.len(), latency_us: latency.into_values().collect(), stop })
}
