//! `cargo xtask bench profile`: what profiling costs a Go program.
//!
//! The allocation fixture (`tests/fixtures/goalloc`, built here with the
//! machine's `go`, plain and with `-tags memprofile`) makes a fixed number
//! of 1 KiB allocations. Each round runs it under the agent in every
//! configuration, the order rotating:
//! - `base`: `--profile-hz 0 --alloc-profiles false` (the Go runtime probes only);
//! - `cpu`: the default CPU sampling (19 Hz per CPU), no allocation probes;
//! - `alloc`: allocation probes, no CPU sampling: the plain build is sampled
//!   by span refills and large allocations, the `memprofile` build by the
//!   runtime's own samples (`runtime.mProf_Malloc`).
//!
//! Throughput ratio = median wall time of `base` ÷ that of the
//! configuration (same fixture). With `kernel.bpf_stats_enabled` on, the
//! run counts and run time of `cpu_sample` and the `go_alloc_*` programs
//! give hits per run and the programs' own time per hit; the trap of a
//! uprobe (not in that time) is estimated from the fixture's extra CPU
//! time per hit. Last, the symbolization rate: `observer symbolize` on
//! every function of the fixture.

use std::{fs, path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{
    ProfileArgs, child,
    go::{BpfStats, Hits, children_cpu, go, programs_runs, start_fixture},
    interrupt,
    observer::Observer,
    report,
};
use crate::host;

const SIZE: &str = "1024";
const ATTACH_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);
const WORK_WITHIN: std::time::Duration = std::time::Duration::from_secs(600);
const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);
/// The programs whose cost is reported (`go_alloc_sampled`: the machine's
/// `go` is 1.23 or newer; `go_alloc_sampled_2` is its older twin).
const PROGRAMS: [&str; 4] = ["cpu_sample", "go_alloc_sampled", "go_alloc_span", "go_alloc_large"];

/// One configuration: its name, the fixture build, the agent's flags.
struct Config {
    name: &'static str,
    memprofile: bool,
    flags: &'static [&'static str],
}

const CONFIGS: [Config; 5] = [
    Config { name: "base", memprofile: false, flags: &["--profile-hz", "0", "--alloc-profiles", "false"] },
    Config { name: "cpu", memprofile: false, flags: &["--alloc-profiles", "false"] },
    Config { name: "alloc_spans", memprofile: false, flags: &["--profile-hz", "0"] },
    Config { name: "base_memprofile", memprofile: true, flags: &["--profile-hz", "0", "--alloc-profiles", "false"] },
    Config { name: "alloc_memprofile", memprofile: true, flags: &["--profile-hz", "0"] },
];

pub fn run(args: &ProfileArgs) -> Result<std::process::ExitCode> {
    if !host::is_root()? {
        bail!("bench profile needs root (eBPF, uprobes, perf events, kernel.bpf_stats_enabled): run it with sudo");
    }
    if args.allocs == 0 || args.repeat == 0 {
        bail!("--allocs and --repeat must be at least 1");
    }
    let bin = super::agent_bin(args.observer.as_deref())?;
    interrupt::install()?;
    let dir = host::target_dir().join("bench");
    let plain = crate::gofixture::build_program("goalloc", None, &dir, "benchalloc")?;
    let memprofile = crate::gofixture::build_program("goalloc", Some("memprofile"), &dir, "benchalloc-mem")?;
    let scratch = host::workspace_root().join("bench/results/profile-observer.tmp");
    eprintln!("==> bench profile: {} allocations of {SIZE} B per run, {} rounds", args.allocs, args.repeat);

    let mut runs: Vec<Vec<Value>> = CONFIGS.iter().map(|_| Vec::new()).collect();
    for round in 0..args.repeat {
        for k in 0..CONFIGS.len() {
            interrupt::check()?;
            let i = (k + round) % CONFIGS.len();
            let c = &CONFIGS[i];
            let fixture = if c.memprofile { &memprofile } else { &plain };
            let r = measured(&bin, &scratch, fixture, args.allocs, c.flags)?;
            eprintln!(
                "    round {round} {:<16} {:.3} s wall, {:.3} s cpu {}",
                c.name,
                r["wall_s"],
                r["cpu_s"],
                hits_text(&r)
            );
            runs[i].push(r);
        }
    }
    fs::remove_dir_all(&scratch).ok();
    let symbolization = symbolize_rate(&bin, &plain)?;

    let med = report::median_field;
    let wall = |i: usize| med(&runs[i], "wall_s");
    let cpu = |i: usize| med(&runs[i], "cpu_s");
    let program = |i: usize, p: &str| {
        let runs_ = med(&runs[i], &format!("{p}_runs"));
        let ns = med(&runs[i], &format!("{p}_ns"));
        json!({"hits_per_run": runs_, "program_ns_per_hit": if runs_ > 0.0 { ns / runs_ } else { f64::NAN }})
    };
    // The fixture's extra CPU per hit over its baseline: the trap, the
    // program and what the probe disturbs.
    let per_hit_us = |i: usize, base: usize, p: &str| {
        let hits = med(&runs[i], &format!("{p}_runs"));
        if hits > 0.0 { (cpu(i) - cpu(base)) / hits * 1e6 } else { f64::NAN }
    };
    let results = json!({
        "bench": "profile",
        "allocs_per_run": args.allocs,
        "alloc_size_bytes": SIZE.parse::<u64>().unwrap_or(0),
        "rounds": args.repeat,
        "median": {
            "cpu_throughput_ratio": wall(0) / wall(1),
            "alloc_spans_throughput_ratio": wall(0) / wall(2),
            "alloc_memprofile_throughput_ratio": wall(3) / wall(4),
            "cpu_sample": program(1, "cpu_sample"),
            "go_alloc_span": program(2, "go_alloc_span"),
            "go_alloc_large": program(2, "go_alloc_large"),
            "go_alloc_sampled": program(4, "go_alloc_sampled"),
            "span_fixture_cpu_us_per_hit": per_hit_us(2, 0, "go_alloc_span"),
            "memprofile_fixture_cpu_us_per_hit": per_hit_us(4, 3, "go_alloc_sampled"),
        },
        "symbolization": symbolization,
        "runs": CONFIGS.iter().zip(&runs).map(|(c, r)| (c.name.to_string(), json!(r))).collect::<serde_json::Map<_, _>>(),
    });
    let m = &results["median"];
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!("bench profile ({} allocations of {SIZE} B per run, medians of {} rounds):", args.allocs, args.repeat);
    println!(
        "  throughput vs the agent without profiling: CPU sampling at 19 Hz x{:.3}; allocation probes: spans x{:.3}, memprofile x{:.3}",
        f(&m["cpu_throughput_ratio"]),
        f(&m["alloc_spans_throughput_ratio"]),
        f(&m["alloc_memprofile_throughput_ratio"])
    );
    for p in ["cpu_sample", "go_alloc_span", "go_alloc_large", "go_alloc_sampled"] {
        println!(
            "  {p}: {:.0} hits per run, {:.0} ns each in the program",
            f(&m[p]["hits_per_run"]),
            f(&m[p]["program_ns_per_hit"])
        );
    }
    println!(
        "  fixture CPU per allocation-probe hit (trap + program): spans {:.2} us, memprofile {:.2} us",
        f(&m["span_fixture_cpu_us_per_hit"]),
        f(&m["memprofile_fixture_cpu_us_per_hit"])
    );
    println!(
        "  symbolization: {} addresses in {:.3} s: {:.0}/s",
        results["symbolization"]["addresses"],
        f(&results["symbolization"]["seconds"]),
        f(&results["symbolization"]["per_s"])
    );
    report::write_atomically(&args.output, &(serde_json::to_string_pretty(&results)? + "\n"))?;
    eprintln!("==> wrote {}", args.output.display());
    Ok(std::process::ExitCode::SUCCESS)
}

/// One run of `fixture` under an agent started with `flags`: wall and CPU
/// time of its work, and the runs of [`PROGRAMS`] over it.
fn measured(bin: &Path, scratch: &Path, fixture: &Path, allocs: u64, flags: &[&str]) -> Result<Value> {
    let name = fixture.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let mut agent_args = vec!["--go-process", name];
    agent_args.extend_from_slice(flags);
    let agent = Observer::start_with(bin, scratch, &agent_args)?;
    let stats = BpfStats::enable()?;
    let n = allocs.to_string();
    let (mut proc, stdin, _stdout, pid) = start_fixture(fixture, &["-n", &n, "-size", SIZE])?;
    let mut said = Vec::new();
    let attached = format!("observer: go: attached pid={pid} ");
    agent
        .wait_for(|l| l.starts_with(&attached), ATTACH_WITHIN, &mut said)
        .with_context(|| format!("the agent did not attach to pid {pid}; it said:\n{}", said.join("\n")))?;
    let before = programs_runs(agent.pid())?;
    let cpu_before = children_cpu()?;
    let started = Instant::now();
    go(stdin)?;
    let status = child::wait_within(&mut proc, WORK_WITHIN)?;
    let wall = started.elapsed();
    let cpu = children_cpu()?.saturating_sub(cpu_before);
    let after = programs_runs(agent.pid())?;
    drop(stats);
    agent.stop_within(STOP_WITHIN)?;
    match status {
        None => {
            child::kill_and_reap(&mut proc);
            bail!("the fixture (pid {pid}) still ran after {WORK_WITHIN:?}");
        }
        Some(s) if !s.success() => bail!("the fixture (pid {pid}) exited with {s}"),
        Some(_) => {}
    }
    let mut r = json!({"wall_s": wall.as_secs_f64(), "cpu_s": cpu.as_secs_f64()});
    for p in PROGRAMS {
        let get = |m: &std::collections::HashMap<String, Hits>| m.get(p).copied().unwrap_or_default();
        let (a, b) = (get(&after), get(&before));
        r[format!("{p}_runs")] = json!(a.runs.saturating_sub(b.runs));
        r[format!("{p}_ns")] = json!(a.run_time_ns.saturating_sub(b.run_time_ns));
    }
    Ok(r)
}

fn hits_text(r: &Value) -> String {
    PROGRAMS
        .iter()
        .filter(|p| r[format!("{p}_runs")].as_u64().unwrap_or(0) > 0)
        .map(|p| format!("{p}={}", r[format!("{p}_runs")]))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `observer symbolize` on the entry of every function `go tool nm` lists
/// in `fixture`: addresses per second, reading its tables included.
fn symbolize_rate(bin: &Path, fixture: &Path) -> Result<Value> {
    let nm = Command::new("go").args(["tool", "nm"]).arg(fixture).output().context("running go tool nm")?;
    if !nm.status.success() {
        bail!("go tool nm {}: {}", fixture.display(), String::from_utf8_lossy(&nm.stderr).trim());
    }
    let addrs: Vec<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (addr, kind) = (f.next()?, f.next()?);
            (kind == "T").then(|| format!("0x{addr}"))
        })
        .collect();
    let started = Instant::now();
    let out =
        Command::new(bin).arg("symbolize").arg(fixture).args(&addrs).output().context("running observer symbolize")?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("observer symbolize: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(
        json!({"binary": fixture.display().to_string(), "addresses": addrs.len(), "seconds": seconds, "per_s": addrs.len() as f64 / seconds}),
    )
}
