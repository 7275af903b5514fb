//! A pprof file as `go tool pprof` reads it: the independent reader of the
//! agent's profiles. `-symbolize=none`: names come from the file only, never
//! from a binary pprof would find on this machine.

use std::path::{Path, PathBuf};
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
    let text = pprof(file, &["-sample_index=samples", if cum { "-cum" } else { "-flat" }]);
    let total = text
        .lines()
        .find_map(|l| l.split_once("Total samples = ").map(|(_, n)| n.trim()))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `Total samples = N` in pprof's output:\n{text}"));
    (total, rows(&text))
}

/// `go tool pprof -top` of `sample_index` in its base unit (bytes for
/// `alloc_space`): the total and every row, sorted by flat.
pub fn top_of(file: &Path, sample_index: &str) -> (u64, Vec<Row>) {
    let text = pprof(file, &[&format!("-sample_index={sample_index}"), "-unit=B"]);
    // `Showing nodes accounting for 90789972B, 100% of 90789972B total`
    let total = text
        .lines()
        .find_map(|l| l.split_once(" of ").and_then(|(_, rest)| rest.strip_suffix(" total")))
        .and_then(number)
        .unwrap_or_else(|| panic!("no `of N total` in pprof's output:\n{text}"));
    (total, rows(&text))
}

fn pprof(file: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("go");
    cmd.args(["tool", "pprof", "-symbolize=none", "-top", "-nodecount=1000"])
        .args(args)
        .arg(file)
        .env("GOTOOLCHAIN", "local")
        .env("PPROF_BINARY_PATH", "/nonexistent");
    let out = output_within(&mut cmd, PPROF_WITHIN);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{cmd:?}: {}\n{text}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    text
}

/// `90789972B` or `97`.
fn number(s: &str) -> Option<u64> {
    s.trim_end_matches('B').parse().ok()
}

fn rows(text: &str) -> Vec<Row> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let pct = |s: &str| s.trim_end_matches('%').parse::<f64>().ok();
            let flat = number(f.next()?)?;
            let flat_pct = pct(f.next()?)?;
            let _sum = f.next()?;
            let cum = number(f.next()?)?;
            let cum_pct = pct(f.next()?)?;
            Some(Row { flat, flat_pct, cum, cum_pct, name: f.collect::<Vec<_>>().join(" ") })
        })
        .collect()
}

/// The rolling window profiles of `kind` (`cpu`, `alloc`) of `pid` in the
/// agent's output directory `dir`, sorted by time.
pub fn window_files(dir: &Path, pid: u32, kind: &str) -> Vec<PathBuf> {
    let windows = dir.join("profiles/windows");
    let (of_pid, suffix) = (format!("-{pid}-"), format!(".{kind}.pb.gz"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&windows)
        .unwrap_or_else(|e| panic!("{}: {e}", windows.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(&of_pid) && n.ends_with(&suffix)))
        .collect();
    files.sort();
    files
}
