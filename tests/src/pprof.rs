//! A pprof file as `go tool pprof` reads it: the independent reader of the
//! agent's profiles. `-symbolize=none`: names come from the file only, never
//! from a binary pprof would find on this machine.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::command::output_within;

const PPROF_WITHIN: Duration = Duration::from_secs(60);

/// One row of `-top`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub flat: u64,
    pub flat_pct: f64,
    pub cum: u64,
    pub cum_pct: f64,
    pub name: String,
}

/// `go tool pprof -top` in samples: the total and every row (sorted by
/// flat, or by cum with `cum`).
pub fn top(file: &Path, cum: bool) -> (u64, Vec<Row>) {
    let mut cmd = Command::new("go");
    cmd.args(["tool", "pprof", "-symbolize=none", "-sample_index=samples", "-top", "-nodecount=1000"]);
    if cum {
        cmd.arg("-cum");
    }
    cmd.arg(file).env("GOTOOLCHAIN", "local").env("PPROF_BINARY_PATH", "/nonexistent");
    let out = output_within(&mut cmd, PPROF_WITHIN);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{cmd:?}: {}\n{text}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let total = text
        .lines()
        .find_map(|l| l.split_once("Total samples = ").map(|(_, n)| n.trim()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `Total samples = N` in pprof's output:\n{text}"));
    let rows = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let pct = |s: &str| s.trim_end_matches('%').parse::<f64>().ok();
            let flat = f.next()?.parse().ok()?;
            let flat_pct = pct(f.next()?)?;
            let _sum = f.next()?;
            let cum = f.next()?.parse().ok()?;
            let cum_pct = pct(f.next()?)?;
            Some(Row { flat, flat_pct, cum, cum_pct, name: f.collect::<Vec<_>>().join(" ") })
        })
        .collect();
    (total, rows)
}
