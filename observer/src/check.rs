//! `observer check`: probe the kernel, then say per signal (SPEC §1) which
//! mechanism observer will use, or why none works.

use std::process::ExitCode;

use serde::Serialize;

use crate::{
    config::CheckArgs,
    kernel::{
        features::{self, Features, Probe},
        privileges,
    },
};

/// One signal's verdict.
#[derive(Debug, Serialize)]
pub struct SignalPlan {
    pub signal: &'static str,
    /// A run fails without it.
    pub required: bool,
    /// This build collects the signal (the others are on the roadmap).
    pub implemented: bool,
    /// The mechanism that will be used, or why none can be.
    pub mechanism: Probe,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    features: &'a Features,
    signals: &'a [SignalPlan],
    ok: bool,
}

pub fn run(args: &CheckArgs) -> ExitCode {
    if let Err(err) = privileges::check() {
        eprintln!("observer: error: {err}");
        return ExitCode::FAILURE;
    }
    let features = features::detect();
    let signals = plan(&features);
    let ok = signals.iter().all(|s| !s.required || s.mechanism.is_ok());
    if args.json {
        match serde_json::to_string_pretty(&Report { features: &features, signals: &signals, ok }) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("observer: error: encoding the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", table(&features, &signals));
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Picks, per signal, the first mechanism this kernel supports.
pub fn plan(f: &Features) -> Vec<SignalPlan> {
    let tracepoint = |name: &'static str| -> Probe {
        if !f.program("tracepoint") {
            return Err("tracepoint programs do not attach here".into());
        }
        if f.tracepoint(name) { Ok(format!("tracepoint {name}")) } else { Err(format!("no tracepoint {name}")) }
    };
    let memcg = || -> Result<(), String> {
        if f.cgroup.memory_v2() {
            Ok(())
        } else if f.cgroup.v1_controllers.iter().any(|c| c == "memory") {
            Err("no cgroup v2 memory controller (memory is on cgroup v1 here)".into())
        } else {
            Err("no cgroup v2 memory controller".into())
        }
    };
    let first = |options: Vec<Probe>| -> Probe {
        let mut reasons = Vec::new();
        for o in options {
            match o {
                Ok(m) => return Ok(m),
                Err(e) => reasons.push(e),
            }
        }
        Err(reasons.join("; "))
    };
    let function_hook = |kind: &str, function: &str| -> Probe {
        if !f.function(function) {
            Err(format!("{function} not in kallsyms"))
        } else if !f.program(kind) {
            Err(format!("{kind} programs do not attach here"))
        } else {
            Ok(format!("{kind} {function}"))
        }
    };
    let memcg_reclaim = || -> Probe {
        let begin = tracepoint("vmscan:mm_vmscan_memcg_reclaim_begin")?;
        tracepoint("vmscan:mm_vmscan_memcg_reclaim_end").map(|_| format!("{begin}/_end"))
    };
    let exit_probe = |kind: &str| if kind == "fentry" { "fexit" } else { "kretprobe" };
    let uprobe = |what: &str| -> Probe {
        if f.program("uprobe") { Ok(format!("uprobes on {what}")) } else { Err("uprobes do not attach here".into()) }
    };
    // Before 6.10 the tracepoint misses resets sent without a full socket;
    // a hook on the senders fills that gap.
    let reset_sent = || -> Probe {
        let tp = tracepoint("tcp:tcp_send_reset")?;
        if !f.send_reset_partial {
            return Ok(tp);
        }
        let hook =
            first(vec![function_hook("fentry", "tcp_v4_send_reset"), function_hook("kprobe", "tcp_v4_send_reset")])
                .map_err(|e| {
                    format!("{tp} misses resets without a full socket on this kernel, and no hook for them: {e}")
                })?;
        Ok(format!("{tp} + {hook}/tcp_v6_send_reset (no-socket resets)"))
    };
    let mut plans = vec![
        ("tcp.reset.sent", true, true, reset_sent()),
        ("tcp.reset.received", true, true, tracepoint("tcp:tcp_receive_reset")),
        (
            "net.drop",
            false,
            true,
            tracepoint("skb:kfree_skb").and_then(|m| {
                if f.kfree_skb_reason {
                    Ok(format!("{m} (reason)"))
                } else {
                    Err("skb:kfree_skb has no reason field".into())
                }
            }),
        ),
        ("tcp.retransmit", false, true, tracepoint("tcp:tcp_retransmit_skb")),
        ("memcg.high", false, true, memcg().map(|()| "memory.events change notifications (inotify)".into())),
        (
            "memcg.throttle",
            false,
            true,
            memcg().and_then(|()| {
                // Attached for real (`Features::over_high_hooks`), with the
                // exit probe the agent pairs with each.
                let hooks = f.over_high_hooks.iter().map(|(kind, probe)| match probe {
                    Ok(_) => Ok(format!("{kind} mem_cgroup_handle_over_high (+ {})", exit_probe(kind))),
                    Err(e) => Err(format!("{kind}: {e}")),
                });
                first(hooks.chain([memcg_reclaim().map(|m| format!("{m} in the task's context (inferred)"))]).collect())
            }),
        ),
        (
            "memcg.reclaim",
            false,
            true,
            // The agent falls back to memory.stat deltas (`--memcg-reclaim stat`).
            memcg().map(|()| {
                memcg_reclaim()
                    .unwrap_or_else(|e| format!("memory.stat pgscan/pgsteal deltas (vmscan tracepoints: {e})"))
            }),
        ),
        (
            "memcg.pressure",
            false,
            true,
            memcg().and_then(|()| {
                f.psi.clone().map(|_| "memory.pressure (PSI) triggers, polled where a trigger fails".into())
            }),
        ),
        (
            "memcg.oom_kill",
            false,
            true,
            first(vec![tracepoint("oom:mark_victim"), memcg().map(|()| "memory.events oom_kill".into())]),
        ),
        ("memcg.max", false, true, memcg().map(|()| "memory.events change notifications (inotify)".into())),
        (
            "go.processes",
            false,
            true,
            first(vec![
                tracepoint("sched:sched_process_exec")
                    .and_then(|_| tracepoint("sched:sched_process_exit"))
                    .map(|_| "tracepoints sched:sched_process_exec/exit, /proc rescanned every 5 s".into()),
                Ok("/proc polled every 250 ms".into()),
            ]),
        ),
        ("go.gc", false, true, uprobe("runtime.freeStackSpans (once per cycle, at its end)")),
        ("go.assist", false, true, uprobe("runtime.gcAssistAlloc entry and returns, runtime.gcAssistAlloc1")),
        ("go.heap", false, true, uprobe("runtime.(*pageAlloc).grow, runtime.sysUnusedOS")),
        (
            "profile.cpu",
            false,
            false,
            if f.program("perf_event") {
                Ok("perf_event cpu-clock sampling".into())
            } else {
                Err("perf_event programs do not attach here".into())
            },
        ),
        ("profile.alloc", false, false, uprobe("runtime.mProf_Malloc")),
    ];
    // A signal without a ring buffer or perf buffer has nowhere to send events.
    if f.ring_buffer.is_err() && f.perf_buffer.is_err() {
        for p in &mut plans {
            p.3 = Err("neither ring buffer nor perf buffer maps work".into());
        }
    }
    plans
        .into_iter()
        .map(|(signal, required, implemented, mechanism)| SignalPlan { signal, required, implemented, mechanism })
        .collect()
}

fn table(f: &Features, signals: &[SignalPlan]) -> String {
    let mut out = format!("observer check: Linux {}\n\nKERNEL\n", f.kernel);
    let row = |out: &mut String, name: &str, probe: &Probe| {
        let (verdict, detail) = match probe {
            Ok(d) => ("ok", d.as_str()),
            Err(e) => ("unavailable", e.as_str()),
        };
        out.push_str(&format!("  {name:<28} {verdict:<12} {detail}\n"));
    };
    row(&mut out, "BTF", &f.btf);
    row(&mut out, "tracefs", &f.tracefs);
    for (kind, probe) in &f.programs {
        row(&mut out, &format!("program {kind}"), probe);
    }
    for (kind, probe) in &f.over_high_hooks {
        row(&mut out, &format!("{kind} over_high"), probe);
    }
    row(&mut out, "ring buffer", &f.ring_buffer);
    row(&mut out, "perf buffer", &f.perf_buffer);
    let c = &f.cgroup;
    let v2 = c.v2_mount.as_ref().map_or("none".into(), |m| m.display().to_string());
    out.push_str(&format!(
        "  {:<28} {:<12} v2 at {v2} (controllers: {}); v1 controllers: {}\n",
        "cgroup",
        c.layout,
        if c.v2_controllers.is_empty() { "none".into() } else { c.v2_controllers.join(" ") },
        if c.v1_controllers.is_empty() { "none".into() } else { c.v1_controllers.join(" ") },
    ));
    row(&mut out, "PSI", &f.psi);
    out.push_str("\nTRACEPOINTS AND FUNCTIONS\n");
    for (tp, present) in &f.tracepoints {
        out.push_str(&format!("  {tp:<40} {}\n", if *present { "present" } else { "absent" }));
    }
    for (func, present) in &f.functions {
        out.push_str(&format!("  {:<40} {}\n", format!("{func}()"), if *present { "in kallsyms" } else { "absent" }));
    }
    out.push_str(&format!("\nSIGNALS\n  {:<20} {:<9} {:<13} mechanism\n", "signal", "required", "status"));
    for s in signals {
        let status = match (&s.mechanism, s.implemented) {
            (Ok(_), true) => "active",
            (Ok(_), false) => "not built yet",
            (Err(_), _) => "unavailable",
        };
        let mechanism = match &s.mechanism {
            Ok(m) => m.clone(),
            Err(e) => format!("unavailable: {e}"),
        };
        out.push_str(&format!(
            "  {:<20} {:<9} {:<13} {mechanism}\n",
            s.signal,
            if s.required { "yes" } else { "no" },
            status
        ));
    }
    out
}
