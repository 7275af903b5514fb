//! The Go fixture (`tests/fixtures/gofixture`): built with the machine's `go`
//! by the test, run with flags, its `ready pid=N` awaited and its stderr
//! (where `GODEBUG=gctrace=1` writes) kept.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::command::{line_channel, output_within, wait_within};

const READY_WITHIN: Duration = Duration::from_secs(30);
/// A cold build (PIE rebuilds the standard library) on a busy 2-core machine.
const BUILD_WITHIN: Duration = Duration::from_secs(600);

/// The file offset of function `name`'s entry in `bin` (from `.symtab`),
/// for a tracefs uprobe on it.
pub fn function_offset(bin: &Path, name: &str) -> u64 {
    use object::{Object, ObjectSection, ObjectSymbol};
    let data = std::fs::read(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let elf = object::File::parse(&*data).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let symbol =
        elf.symbols().find(|s| s.name() == Ok(name)).unwrap_or_else(|| panic!("no {name} in {}", bin.display()));
    let section = elf.section_by_index(symbol.section_index().expect("a defined symbol")).expect("its section");
    let (file_offset, _) = section.file_range().expect("a section with file contents");
    symbol.address() - section.address() + file_offset
}

/// The fixture's source directory.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gofixture")
}

/// The Go releases covered: the newest patch of each of the last six. The
/// machine's `go` fetches each once from the module proxy (`GOTOOLCHAIN`)
/// into the module cache, and reuses it from there afterwards.
pub const RELEASES: &[&str] = &["go1.22.12", "go1.23.12", "go1.24.13", "go1.25.14", "go1.26.11", "go1.27.4"];

/// Debian's `golang-1.19-go`: a release older than the table knows.
pub const DEBIAN_GO_1_19: &str = "/usr/lib/go-1.19/bin/go";

/// Which `go` builds the fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// One of [`RELEASES`], through `GOTOOLCHAIN`.
    Release(&'static str),
    /// [`DEBIAN_GO_1_19`], offline.
    Debian119,
}

impl Toolchain {
    fn name(self) -> &'static str {
        match self {
            Self::Release(v) => v,
            Self::Debian119 => "debian-go1.19",
        }
    }
}

/// How the fixture is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `go build`: symbols and DWARF.
    Plain,
    /// `-ldflags=-w`: symbols, no DWARF (the per-release table applies).
    NoDwarf,
    /// `-buildmode=pie`.
    Pie,
    /// `-trimpath`.
    Trimpath,
    /// `CGO_ENABLED=1 -tags cgofixture`: C code, linked by gcc.
    Cgo,
    /// `-ldflags=-s -w`: no symbols, no DWARF.
    Stripped,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::NoDwarf => "nodwarf",
            Self::Pie => "pie",
            Self::Trimpath => "trimpath",
            Self::Cgo => "cgo",
            Self::Stripped => "stripped",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Self::Plain => &[],
            Self::NoDwarf => &["-ldflags=-w"],
            Self::Pie => &["-buildmode=pie"],
            Self::Trimpath => &["-trimpath"],
            Self::Cgo => &["-tags", "cgofixture"],
            Self::Stripped => &["-ldflags=-s -w"],
        }
    }
}

/// The fixture the VM tests run: the one `cargo xtask vm-test` built on the
/// host (`OBSERVER_GOFIXTURE`: the guest has no toolchain to fetch and
/// builds slowly under emulation), else the newest release's plain build in
/// `cache_dir`.
pub fn host_built_or_build(cache_dir: &Path) -> PathBuf {
    match std::env::var_os("OBSERVER_GOFIXTURE") {
        Some(bin) => PathBuf::from(bin),
        None => build(cache_dir, Toolchain::Release("go1.27.4"), Variant::Plain),
    }
}

/// The fixture built by `toolchain` as `variant`, in `cache_dir`: built once
/// and reused until a source file is newer than the binary.
pub fn build(cache_dir: &Path, toolchain: Toolchain, variant: Variant) -> PathBuf {
    build_from(&source_dir(), cache_dir, toolchain, variant)
}

/// The Go program in `source` (a directory of `tests/fixtures`) built as
/// [`build`] builds the fixture, named after its directory.
pub fn build_from(source: &Path, cache_dir: &Path, toolchain: Toolchain, variant: Variant) -> PathBuf {
    build_tagged(source, cache_dir, toolchain, variant, None)
}

/// As [`build_from`], with the build tag `tag` set (not for [`Variant::Cgo`],
/// which sets its own).
pub fn build_tagged(
    source: &Path,
    cache_dir: &Path,
    toolchain: Toolchain,
    variant: Variant,
    tag: Option<&str>,
) -> PathBuf {
    assert!(tag.is_none() || variant != Variant::Cgo, "the cgo variant sets its own build tag");
    let program = bin_name(source);
    let tagged = tag.map(|t| format!("-{t}")).unwrap_or_default();
    let bin = cache_dir.join(format!("{program}{tagged}-{}-{}", toolchain.name(), variant.name()));
    if is_fresh(&bin, source) {
        return bin;
    }
    std::fs::create_dir_all(cache_dir).unwrap_or_else(|e| panic!("{}: {e}", cache_dir.display()));
    // Built aside and renamed: a half-written binary is never reused.
    // Per process: another test run may build the same one meanwhile.
    let partial = cache_dir.join(format!("{}.partial.{}", bin_name(&bin), std::process::id()));
    let mut cmd = match toolchain {
        Toolchain::Release(version) => {
            let mut cmd = Command::new("go");
            cmd.env("GOTOOLCHAIN", version);
            cmd
        }
        Toolchain::Debian119 => {
            let mut cmd = Command::new(DEBIAN_GO_1_19);
            cmd.env("GOTOOLCHAIN", "local").env("GOPROXY", "off");
            cmd
        }
    };
    cmd.arg("build").args(variant.flags());
    if let Some(tag) = tag {
        cmd.args(["-tags", tag]);
    }
    cmd.arg("-o")
        .arg(&partial)
        .arg(".")
        .current_dir(source)
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", if variant == Variant::Cgo { "1" } else { "0" });
    let out = output_within(&mut cmd, BUILD_WITHIN);
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&partial, &bin).unwrap_or_else(|e| panic!("{} -> {}: {e}", partial.display(), bin.display()));
    bin
}

fn bin_name(bin: &Path) -> String {
    bin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The binary exists and no source in `source` is newer.
fn is_fresh(bin: &Path, source: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = modified(bin) else { return false };
    let Ok(sources) = std::fs::read_dir(source) else { return false };
    sources.flatten().all(|e| modified(&e.path()).is_some_and(|m| m <= built))
}

/// A running fixture that said `ready pid=N`.
pub struct GoFixture {
    child: Child,
    pub pid: u32,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// What a finished fixture printed.
pub struct Finished {
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl GoFixture {
    /// Starts `bin args...` with `env` and stdin piped (for `-wait-stdin`).
    pub fn start(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> GoFixture {
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let stdout = line_channel(child.stdout.take().expect("piped stdout"));
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        let stdin = child.stdin.take();
        let line = stdout.recv_timeout(crate::bound(READY_WITHIN));
        let pid = line.as_deref().ok().and_then(|l| l.strip_prefix("ready pid=")).and_then(|p| p.parse().ok());
        let Some(pid) = pid else {
            let _ = wait_within(&mut child, Duration::ZERO);
            panic!("fixture did not say `ready pid=N` within {:?}: {line:?}", crate::bound(READY_WITHIN));
        };
        GoFixture { child, pid, stdin, stdout, stderr: Some(stderr) }
    }

    /// Lets a `-wait-stdin` fixture start working.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(b"go\n").expect("write to fixture stdin");
        stdin.flush().expect("flush fixture stdin");
    }

    /// Waits for the fixture to exit however it ends (the OOM killer, a
    /// signal) and returns its status and what it printed.
    pub fn wait(mut self, within: Duration) -> (std::process::ExitStatus, Finished) {
        self.stdin.take();
        let status = wait_within(&mut self.child, within)
            .unwrap_or_else(|| panic!("fixture pid {} still running after {within:?}; killed it", self.pid));
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        (status, Finished { stdout: self.stdout.try_iter().collect(), stderr })
    }

    /// Waits for the fixture to exit 0 and returns what it printed.
    pub fn finish(mut self, within: Duration) -> Finished {
        self.stdin.take();
        let status = wait_within(&mut self.child, within)
            .unwrap_or_else(|| panic!("fixture pid {} still running after {within:?}; killed it", self.pid));
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        assert!(status.success(), "fixture pid {} exited with {status}; stderr:\n{stderr}", self.pid);
        Finished { stdout: self.stdout.try_iter().collect(), stderr }
    }
}

impl Drop for GoFixture {
    fn drop(&mut self) {
        // Only with the fixture still running when a test failed: our child, by pid.
        let _ = wait_within(&mut self.child, Duration::ZERO);
    }
}

/// The cycle numbers of the `gc N @...` lines that `GODEBUG=gctrace=1` printed.
pub fn gctrace_cycles(stderr: &str) -> Vec<u32> {
    stderr
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("gc")).then(|| words.next()?.parse().ok()).flatten()
        })
        .collect()
}

/// One `GODEBUG=gctrace=1` line, the parts the agent's figures are checked
/// against.
#[derive(Debug, Clone, PartialEq)]
pub struct GcTrace {
    pub cycle: u32,
    /// The clock triple as printed (`0.098+0.32+0.12`): sweep termination,
    /// mark, mark termination, in Go's own formatting ([`fmt_ns_as_ms`]).
    pub clock: [String; 3],
    /// Assist CPU time in ms (the first of the middle `a/b/c` cpu figures).
    pub assist_cpu_ms: f64,
    /// `A->B->C MB`: heap at start, at mark termination, marked (MiB, truncated).
    pub heap_mib: [u64; 3],
    /// `D MB goal`.
    pub goal_mib: u64,
    pub forced: bool,
}

/// The `gc N @...` lines of a gctrace, parsed; panics on a line it cannot read.
pub fn gctrace(stderr: &str) -> Vec<GcTrace> {
    stderr
        .lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some("gc") && w.next().is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|l| parse_gctrace_line(l).unwrap_or_else(|| panic!("unreadable gctrace line: {l}")))
        .collect()
}

fn parse_gctrace_line(line: &str) -> Option<GcTrace> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let before = |a: &str, b: &str| words.windows(3).find(|w| w[1] == a && w[2] == b).map(|w| w[0]);
    let cycle = words.get(1)?.parse().ok()?;
    let clock: Vec<String> = before("ms", "clock,")?.split('+').map(str::to_string).collect();
    let cpu: Vec<&str> = before("ms", "cpu,")?.split('+').collect();
    let assist_cpu_ms = cpu.get(1)?.split('/').next()?.parse().ok()?;
    let heap: Vec<u64> = words.windows(2).find(|w| w[1] == "MB," && w[0].contains("->"))?[0]
        .split("->")
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let goal_mib = before("MB", "goal,")?.parse().ok()?;
    Some(GcTrace {
        cycle,
        clock: clock.try_into().ok()?,
        assist_cpu_ms,
        heap_mib: heap.try_into().ok()?,
        goal_mib,
        forced: line.ends_with("(forced)"),
    })
}

/// Go's `runtime.fmtNSAsMS`: how gctrace prints a duration in ms (whole
/// ms from 10 ms on, else two significant digits, at most three decimals).
pub fn fmt_ns_as_ms(ns: u64) -> String {
    if ns >= 10_000_000 {
        return (ns / 1_000_000).to_string();
    }
    let mut x = ns / 1000;
    if x == 0 {
        return "0".to_string();
    }
    let mut dec = 3;
    while x >= 100 {
        x /= 10;
        dec -= 1;
    }
    let digits = format!("{x:0width$}", width = dec + 1);
    let (int, frac) = digits.split_at(digits.len() - dec);
    if dec == 0 { int.to_string() } else { format!("{int}.{frac}") }
}

/// The KiB that `GODEBUG=scavtrace=1` lines say were released: background,
/// eager and (with `forced`) `debug.FreeOSMemory`'s, per line.
pub fn scavtrace_kib(stderr: &str) -> Vec<(u64, u64, bool)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("scav ")?;
            let words: Vec<&str> = rest.split_whitespace().collect();
            let bg = words.first()?.parse().ok()?;
            let eager = words.windows(4).find(|w| w[1] == "KiB" && w[3] == "(eager),")?[0].parse().ok()?;
            Some((bg, eager, l.ends_with("(forced)")))
        })
        .collect()
}

/// Same numbers as a set, for comparisons.
pub fn cycle_set(cycles: &[u32]) -> BTreeSet<u32> {
    cycles.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gctrace_lines_only() {
        let stderr = "\
gc 1 @0.998s 0%: 0.098+0.32+0.12 ms clock, 0.19+0.26/0.001/0+0.25 ms cpu, 3->3->0 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P
scvg: 0 MB released
gc 2 @1.003s 0%: 0.055+0.49+0.057 ms clock, 0.11+0/0.09/0+0.11 ms cpu, 3->3->0 MB, 4 MB goal, 2 P (forced)
gcfoo 3
";
        assert_eq!(gctrace_cycles(stderr), vec![1, 2]);
        let lines = gctrace(stderr);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].clock, ["0.098", "0.32", "0.12"]);
        assert_eq!(lines[0].heap_mib, [3, 3, 0]);
        assert_eq!((lines[0].goal_mib, lines[0].assist_cpu_ms, lines[0].forced), (4, 0.26, false));
        assert!(lines[1].forced);
    }

    #[test]
    fn durations_formatted_like_the_runtime() {
        // Values the runtime printed for these durations.
        assert_eq!(fmt_ns_as_ms(0), "0");
        assert_eq!(fmt_ns_as_ms(999), "0");
        assert_eq!(fmt_ns_as_ms(98_765), "0.098");
        assert_eq!(fmt_ns_as_ms(320_000), "0.32");
        assert_eq!(fmt_ns_as_ms(6_049_999), "6.0");
        assert_eq!(fmt_ns_as_ms(9_999_999), "9.9");
        assert_eq!(fmt_ns_as_ms(21_400_000), "21");
        assert_eq!(fmt_ns_as_ms(2_000), "0.002");
    }

    #[test]
    fn reads_scavtrace() {
        let stderr = "scav 3392 KiB work (bg), 0 KiB work (eager), 15184 KiB now, 59% util\n\
                      scav 0 KiB work (bg), 160 KiB work (eager), 15472 KiB now, 90% util (forced)\n";
        assert_eq!(scavtrace_kib(stderr), vec![(3392, 0, false), (0, 160, true)]);
    }
}
