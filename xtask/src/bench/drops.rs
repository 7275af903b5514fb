//! `cargo xtask bench drops`: a flood of dropped packets. In one fresh
//! namespace with an nftables `ct state invalid counter drop` rule, a thread
//! of this process (moved into the namespace) sends stray TCP RSTs over
//! loopback from a raw socket; conntrack marks them invalid and the rule
//! drops them, each one a `skb:kfree_skb` with reason `NETFILTER_DROP`.
//!
//! Rounds alternate "nothing attached" and "agent attached"; each reports the
//! sending thread's CPU time per packet (the drop path runs in its softirq)
//! and wall time. The ratio of medians is the kernel-side cost of the agent.
//! With the agent: drop events it wrote vs drops it counted (the per-CPU
//! event budget lets only a few through), and its own CPU time.

use std::{
    fs,
    net::Ipv4Addr,
    path::Path,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::{
    sched::{CloneFlags, setns},
    sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, sendto, socket},
    time::{ClockId, clock_gettime},
};
use serde_json::json;

use super::{DropsArgs, interrupt, netns::Netns, observer::Observer, report};
use crate::host;

const RULESET: &str = "table inet t {
  chain input { type filter hook input priority 0; ct state invalid counter drop; }
}";

pub fn run(args: &DropsArgs) -> Result<ExitCode> {
    if !host::is_root()? {
        bail!("bench drops needs root (network namespaces, nftables, eBPF): run it with sudo");
    }
    if args.count == 0 || args.repeat == 0 {
        bail!("--count and --repeat must be at least 1");
    }
    let bin = super::agent_bin(args.observer.as_deref())?;
    interrupt::install()?;
    let ns = Netns::new()?;
    nft_load(&ns)?;
    let scratch = host::workspace_root().join("bench/results/drops-observer.tmp");
    eprintln!(
        "==> bench drops: namespace {} (netns {}), {} stray RSTs per run, {} rounds",
        ns.name(),
        ns.inode(),
        args.count,
        args.repeat
    );
    // One unrecorded run first, so that the first recorded one is not the cold one.
    flood(&ns, args.count)?;
    let mut baseline = Vec::new();
    let mut attached = Vec::new();
    for round in 0..args.repeat {
        for with_agent in if round % 2 == 0 { [false, true] } else { [true, false] } {
            interrupt::check()?;
            let counted_before = nft_counted(&ns)?;
            if with_agent {
                let agent = Observer::start(&bin, &scratch)?;
                let f = flood(&ns, args.count)?;
                let stopped = agent.stop()?;
                let (events, aggregated) = count_drops(&scratch, ns.inode())?;
                fs::remove_dir_all(&scratch).ok();
                let nft = nft_counted(&ns)? - counted_before;
                eprintln!(
                    "    round {round} observer: {:.0} ns/pkt cpu, {:.0} ns/pkt wall; nft {nft}, aggregated {aggregated}, events {events}, agent cpu {:.3}s",
                    f.cpu_ns_per_pkt(),
                    f.wall_ns_per_pkt(),
                    stopped.cpu.as_secs_f64()
                );
                attached.push(json!({
                    "round": round, "cpu_ns_per_packet": f.cpu_ns_per_pkt(), "wall_ns_per_packet": f.wall_ns_per_pkt(),
                    "nft_dropped": nft, "aggregated": aggregated, "events_sent": events,
                    "events_not_sent": aggregated.saturating_sub(events),
                    "agent_cpu_s": stopped.cpu.as_secs_f64(), "agent_lost": stopped.lost,
                }));
            } else {
                let f = flood(&ns, args.count)?;
                let nft = nft_counted(&ns)? - counted_before;
                eprintln!(
                    "    round {round} baseline: {:.0} ns/pkt cpu, {:.0} ns/pkt wall; nft {nft}",
                    f.cpu_ns_per_pkt(),
                    f.wall_ns_per_pkt()
                );
                baseline.push(json!({
                    "round": round, "cpu_ns_per_packet": f.cpu_ns_per_pkt(), "wall_ns_per_packet": f.wall_ns_per_pkt(),
                    "nft_dropped": nft,
                }));
            }
        }
    }
    let med = report::median_field;
    let (b_cpu, a_cpu) = (med(&baseline, "cpu_ns_per_packet"), med(&attached, "cpu_ns_per_packet"));
    let (b_wall, a_wall) = (med(&baseline, "wall_ns_per_packet"), med(&attached, "wall_ns_per_packet"));
    let agent_cpu = med(&attached, "agent_cpu_s");
    let events = med(&attached, "events_sent");
    let aggregated = med(&attached, "aggregated");
    let results = json!({
        "bench": "drops",
        "packets_per_run": args.count,
        "rounds": args.repeat,
        "median": {
            "baseline_cpu_ns_per_packet": b_cpu, "observer_cpu_ns_per_packet": a_cpu,
            "cpu_ratio": a_cpu / b_cpu,
            "baseline_wall_ns_per_packet": b_wall, "observer_wall_ns_per_packet": a_wall,
            "wall_ratio": a_wall / b_wall,
            "events_sent": events, "aggregated": aggregated,
            "agent_cpu_s": agent_cpu, "agent_cpu_ns_per_drop": agent_cpu * 1e9 / aggregated.max(1.0),
        },
        "baseline": baseline,
        "observer": attached,
    });
    println!("bench drops ({} stray RSTs dropped by nftables per run, medians of {} rounds):", args.count, args.repeat);
    println!(
        "  kernel-side cost (sender cpu/pkt): {b_cpu:.0} ns without, {a_cpu:.0} ns with observer: x{:.3}",
        a_cpu / b_cpu
    );
    println!(
        "  wall per packet:                   {b_wall:.0} ns without, {a_wall:.0} ns with observer: x{:.3}",
        a_wall / b_wall
    );
    println!("  drops aggregated {aggregated:.0}, events sent {events:.0} (the rest counted only)");
    println!("  agent cpu {agent_cpu:.3} s per run ({:.0} ns per drop)", agent_cpu * 1e9 / aggregated.max(1.0));
    report::write_atomically(&args.output, &(serde_json::to_string_pretty(&results)? + "\n"))?;
    eprintln!("==> wrote {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}

struct Flood {
    packets: u64,
    cpu: Duration,
    wall: Duration,
}

impl Flood {
    fn cpu_ns_per_pkt(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.packets as f64
    }
    fn wall_ns_per_pkt(&self) -> f64 {
        self.wall.as_nanos() as f64 / self.packets as f64
    }
}

/// Sends `count` stray RSTs to 127.0.0.1 inside `ns` from a thread that
/// entered it; measures that thread's CPU time and the wall time.
fn flood(ns: &Netns, count: u64) -> Result<Flood> {
    let path = format!("/run/netns/{}", ns.name());
    std::thread::scope(|s| {
        s.spawn(|| -> Result<Flood> {
            let file = fs::File::open(&path).with_context(|| format!("open {path}"))?;
            setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {path}"))?;
            let fd = socket(AddressFamily::Inet, SockType::Raw, SockFlag::empty(), SockProtocol::Tcp)
                .context("raw TCP socket")?;
            let lo = Ipv4Addr::LOCALHOST;
            let to = SockaddrIn::new(127, 0, 0, 1, 0);
            let cpu0 = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)?;
            let t0 = Instant::now();
            for i in 0..count {
                // Different ports each time: no flow conntrack could know.
                let sport = 20000 + (i % 20000) as u16;
                let seg = rst_segment(lo, sport, lo, 7300, i as u32);
                sendto(std::os::fd::AsRawFd::as_raw_fd(&fd), &seg, &to, MsgFlags::empty()).context("sendto")?;
            }
            let wall = t0.elapsed();
            let cpu1 = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)?;
            let cpu = Duration::from(cpu1).saturating_sub(Duration::from(cpu0));
            Ok(Flood { packets: count, cpu, wall })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the flood thread panicked"))?
    })
}

/// A 20-byte TCP header with RST set and a valid checksum.
fn rst_segment(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&seq.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = 0x04;
    let mut sum: u32 = 0;
    let words = src.octets().into_iter().chain(dst.octets()).chain([0, 6, 0, 20]).chain(h);
    let bytes: Vec<u8> = words.collect();
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    h
}

fn nft_load(ns: &Netns) -> Result<()> {
    let file = std::env::temp_dir().join(format!("obs-bench-drops-{}.nft", std::process::id()));
    fs::write(&file, RULESET)?;
    let out = Command::new("ip").args(["netns", "exec", ns.name(), "nft", "-f"]).arg(&file).output();
    fs::remove_file(&file).ok();
    let out = out.context("cannot run nft (nftables)")?;
    if !out.status.success() {
        bail!("nft -f failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Packets the rule's counter saw so far.
fn nft_counted(ns: &Netns) -> Result<u64> {
    let out = Command::new("ip").args(["netns", "exec", ns.name(), "nft", "-j", "list", "ruleset"]).output()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("nft -j output")?;
    let mut total = 0;
    for item in json["nftables"].as_array().into_iter().flatten() {
        for expr in item["rule"]["expr"].as_array().into_iter().flatten() {
            total += expr["counter"]["packets"].as_u64().unwrap_or(0);
        }
    }
    Ok(total)
}

/// (drop events, summed summary counts) of `netns` in the agent's events.jsonl.
fn count_drops(dir: &Path, netns: u64) -> Result<(u64, u64)> {
    let path = dir.join("events.jsonl");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (mut events, mut aggregated) = (0, 0);
    for line in text.lines() {
        let ev: serde_json::Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line:?}"))?;
        if ev["netns"].as_u64() != Some(netns) {
            continue;
        }
        match ev["kind"].as_str() {
            Some("net.drop") => events += 1,
            Some("net.drop.summary") => aggregated += ev["count"].as_u64().unwrap_or(0),
            _ => {}
        }
    }
    Ok((events, aggregated))
}
