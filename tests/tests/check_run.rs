//! `observer check` and `observer run` agree, signal by signal: check goes
//! through run's own preparation (layouts decoded, programs loaded and
//! attached, then detached), and run writes what it attached to
//! `<output-dir>/signals.json`. Run on the host and on every kernel of the
//! VM matrix; the verdicts are printed for the README's kernel table.

use std::process::Command;
use std::time::Duration;

use observer_e2e::command::output_within;
use observer_e2e::require::require_root_and_bin;
use serde_json::Value;

/// (signal, status, detail) in the order the agent reports them.
fn verdicts(signals: &Value) -> Vec<(String, String, String)> {
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_string();
    signals
        .as_array()
        .unwrap_or_else(|| panic!("signals is not an array: {signals}"))
        .iter()
        .map(|s| (text(s, "signal"), text(s, "status"), text(s, "detail")))
        .collect()
}

#[test]
fn check_and_run_agree_on_every_signal() {
    let Some(bin) = require_root_and_bin() else { return };
    let check = output_within(Command::new(&bin).args(["check", "--json"]), Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "observer check --json: {}\n{stderr}", check.status);
    let report: Value = serde_json::from_slice(&check.stdout).expect("check --json prints JSON");
    let checked = verdicts(&report["signals"]);
    assert_eq!(report["ok"], true, "{report}");

    let dir = tempfile::tempdir().unwrap();
    let run = output_within(
        Command::new(&bin).args(["run", "--duration", "2s", "--quiet", "--output-dir"]).arg(dir.path()),
        Duration::from_secs(120),
    );
    let run_err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "observer run: {}\n{run_err}", run.status);
    let file = dir.path().join("signals.json");
    let written: Value = serde_json::from_slice(&std::fs::read(&file).unwrap_or_else(|e| panic!("{file:?}: {e}")))
        .unwrap_or_else(|e| panic!("{file:?}: {e}"));
    let ran = verdicts(&written);

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    eprintln!("signals on {}:", kernel.trim());
    for (signal, status, detail) in &ran {
        eprintln!("  {signal:<20} {status:<14} {detail}");
    }
    assert_eq!(checked, ran, "check's verdicts vs what run attached");
    // The resets and the Go runtime need nothing this matrix lacks.
    for signal in ["tcp.reset.sent", "tcp.reset.received", "tcp.retransmit", "go.gc", "go.processes"] {
        let status = ran.iter().find(|(s, _, _)| s == signal).map(|(_, st, _)| st.as_str());
        assert_eq!(status, Some("active"), "{signal}: {ran:?}");
    }
    // A signal run calls unavailable is named once, with its reason, in its log.
    for (signal, _, detail) in ran.iter().filter(|(_, st, _)| st == "unavailable") {
        let line = format!("{signal} unavailable: {detail}");
        assert_eq!(run_err.matches(&line).count(), 1, "want one warning {line:?} in:\n{run_err}");
    }
}
