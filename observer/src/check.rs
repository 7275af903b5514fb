//! `observer check`: the same preparation as `observer run` (layouts
//! decoded, programs loaded and attached, then detached), so a signal it
//! calls active is one `run` delivers; and, beside it, what the kernel offers.

use std::process::ExitCode;

use serde::Serialize;

use crate::{
    config::RunConfig,
    kernel::{
        features::{self, Features, Probe},
        privileges,
    },
    sources::{
        attach::{self, Purpose},
        signals::{SignalState, Status},
    },
};

#[derive(Debug, Serialize)]
struct Report<'a> {
    features: &'a Features,
    signals: &'a [SignalState],
    /// One line per capability the agent uses and lacks (`privileges::NEEDED`).
    missing_capabilities: Vec<String>,
    ok: bool,
}

/// Exit 0 when `run` would start: at least one signal is active.
pub fn run(config: &RunConfig, json: bool) -> ExitCode {
    if let Err(err) = privileges::check() {
        eprintln!("observer: error: {err}");
        print!("{}", privileges::table());
        return ExitCode::FAILURE;
    }
    for line in privileges::missing_lines() {
        eprintln!("observer: warning: {line}");
    }
    let features = features::detect();
    privileges::raise_memlock();
    let signals = match attach::all(config, Purpose::Check) {
        // Dropping what was attached detaches it.
        Ok(attached) => attached.signals.list().to_vec(),
        Err(err) => {
            eprintln!("observer: error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let ok = signals.iter().any(|s| s.status == Status::Active);
    if json {
        match serde_json::to_string_pretty(&Report {
            features: &features,
            signals: &signals,
            missing_capabilities: privileges::missing_lines(),
            ok,
        }) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("observer: error: encoding the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}{}", table(&features, &signals), privileges::table());
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn table(f: &Features, signals: &[SignalState]) -> String {
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
    out.push_str(&format!("\nSIGNALS\n  {:<20} {:<13} mechanism\n", "signal", "status"));
    for s in signals {
        out.push_str(&format!("  {:<20} {:<13} {}\n", s.signal, s.status.name(), s.detail));
    }
    out
}
