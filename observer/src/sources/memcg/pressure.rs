//! `memory.pressure` (PSI) of a cgroup: a trigger that wakes the watcher
//! when tasks stalled on memory for `STALL` within `WINDOW`, and the file's
//! totals, which are what every event reports (the trigger only says when to
//! look). A cgroup whose trigger cannot be made (PSI off, or too many
//! triggers) is read on the polling timer instead.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::Path,
};

/// Stall time within [`WINDOW_US`] that fires a trigger.
pub const STALL_US: u64 = 50_000;
/// The trigger's window (the kernel allows 500 ms to 10 s).
pub const WINDOW_US: u64 = 500_000;

/// The two lines of a `memory.pressure` file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub some_total_us: u64,
    pub full_total_us: u64,
    pub some_avg10: f64,
    pub full_avg10: f64,
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=123` and the `full` line.
pub fn parse(text: &str) -> Option<Totals> {
    let mut t = Totals::default();
    let mut seen = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next();
        for w in words {
            let Some((k, v)) = w.split_once('=') else { continue };
            match (kind, k) {
                (Some("some"), "total") => {
                    t.some_total_us = v.parse().ok()?;
                    seen = true;
                }
                (Some("full"), "total") => t.full_total_us = v.parse().ok()?,
                (Some("some"), "avg10") => t.some_avg10 = v.parse().ok()?,
                (Some("full"), "avg10") => t.full_avg10 = v.parse().ok()?,
                _ => {}
            }
        }
    }
    seen.then_some(t)
}

pub fn read(dir: &Path) -> Option<Totals> {
    parse(&std::fs::read_to_string(dir.join("memory.pressure")).ok()?)
}

/// A trigger on `dir/memory.pressure`: the open file polls POLLPRI when it
/// fires, and closing it removes the trigger.
pub fn trigger(dir: &Path) -> std::io::Result<File> {
    let mut file = OpenOptions::new().read(true).write(true).open(dir.join("memory.pressure"))?;
    // One write, with the terminating NUL the kernel's parser accepts.
    file.write_all(format!("some {STALL_US} {WINDOW_US}\0").as_bytes())?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_lines() {
        let t = parse(
            "some avg10=81.51 avg60=20.00 avg300=4.10 total=1234567\nfull avg10=70.00 avg60=1.00 avg300=0.00 total=99\n",
        )
        .unwrap();
        assert_eq!((t.some_total_us, t.full_total_us), (1_234_567, 99));
        assert!((t.some_avg10 - 81.51).abs() < 1e-9 && (t.full_avg10 - 70.0).abs() < 1e-9);
        assert_eq!(parse("garbage"), None);
    }
}
