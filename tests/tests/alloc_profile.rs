//! Allocation profiles, read back by `go tool pprof` (`-symbolize=none`),
//! for Debian's Go 1.19 and every release of the matrix, plain, PIE and
//! stripped:
//! - a binary that links the memory profile (`goalloc -tags memprofile`):
//!   the agent takes the runtime's own samples (`runtime.mProf_Malloc`) and
//!   scales them by the process's real `MemProfileRate` (set here by
//!   `GODEBUG=memprofilerate`, not the default): its top allocation site is
//!   the fixture's own `pprof.Lookup("allocs")` top site, with bytes within
//!   20% of it;
//! - a binary the linker built without memory profiling (plain `goalloc`):
//!   sampled by span refills and large allocations; the top site is
//!   `main.allocate`, compared with what it allocated (n × size), the error
//!   printed; large allocations are counted exactly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use observer_e2e::gofixture::{self, GoFixture, Toolchain, Variant};
use observer_e2e::observer::Observer;
use observer_e2e::pprof::{self, Row};
use observer_e2e::require::require_root_and_bin;
use rstest::rstest;

const ATTACH_WITHIN: Duration = Duration::from_secs(20);
const RUN_WITHIN: Duration = Duration::from_secs(120);
/// The allocating function of the fixture.
const SITE: &str = "main.allocate";
/// Small allocations: size class 1024 (8 per span), 200 MB in all.
const SMALL: (u64, u64) = (200_000, 1024);
/// Large allocations (over 32 KiB, one `allocLarge` each), 128 MiB in all.
const LARGE: (u64, u64) = (2_000, 65_536);
/// Not the runtime's default (512 KiB): the agent must read the real one.
const RATE: &str = "memprofilerate=65536";
/// How far the agent's bytes may be from the runtime's own profile of the
/// same samples.
const SAMPLED_WITHIN: f64 = 0.20;
/// The span method's bound: a refilled span's objects are counted whole,
/// also those allocated before (swept spans come back partly used), and
/// refills are sampled per 512 KiB (measured: within 0.4%).
const SPANS_WITHIN: f64 = 0.10;
const LARGE_WITHIN: f64 = 0.01;

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("gofixtures")
}

fn source() -> PathBuf {
    gofixture::source_dir().parent().expect("tests/fixtures").join("goalloc")
}

/// Runs `fixture` watched, allocating `n` × `size`; its pid.
fn allocate_watched(
    observer: &mut Observer,
    fixture: &Path,
    (n, size): (u64, u64),
    extra: &[&str],
    env: &[(&str, &str)],
) -> u32 {
    let (n, size) = (n.to_string(), size.to_string());
    let mut args = vec!["-n", &n, "-size", &size];
    args.extend_from_slice(extra);
    let mut run = GoFixture::start(fixture, &args, env);
    let pid = run.pid;
    observer.wait_for_stderr(&format!("observer: go: attached pid={pid} "), ATTACH_WITHIN);
    run.go();
    run.finish(RUN_WITHIN);
    pid
}

/// The allocation windows of `pid`, summed by function (bytes, by flat).
fn alloc_rows(dir: &Path, pid: u32, summary: &str) -> (u64, Vec<Row>) {
    let files = pprof::window_files(dir, pid, "alloc");
    assert!(!files.is_empty(), "no allocation window of pid {pid} in {}; {summary}", dir.display());
    let mut total = 0;
    let mut rows: Vec<Row> = Vec::new();
    for f in &files {
        let (t, rs) = pprof::top_of(f, "alloc_space");
        total += t;
        for r in rs {
            match rows.iter_mut().find(|x| x.name == r.name) {
                Some(x) => x.flat += r.flat,
                None => rows.push(r),
            }
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.flat));
    (total, rows)
}

fn show(rows: &[Row]) -> String {
    rows.iter().take(8).map(|r| format!("{:>12}B {}\n", r.flat, r.name)).collect()
}

fn error(measured: u64, truth: u64) -> f64 {
    (measured as f64 - truth as f64).abs() / truth as f64
}

#[rstest]
fn allocation_profile(
    #[values(
        Toolchain::Debian119,
        Toolchain::Release("go1.22.12"),
        Toolchain::Release("go1.23.12"),
        Toolchain::Release("go1.24.13"),
        Toolchain::Release("go1.25.14"),
        Toolchain::Release("go1.26.11"),
        Toolchain::Release("go1.27.4")
    )]
    toolchain: Toolchain,
    #[values(true, false)] memprofile: bool,
) {
    let Some(bin) = require_root_and_bin() else { return };
    if memprofile {
        matches_the_runtimes_own(&bin, toolchain);
    } else {
        without_memory_profiling(&bin, toolchain);
    }
}

/// The `memprofile` build: the runtime's own samples.
fn matches_the_runtimes_own(bin: &Path, toolchain: Toolchain) {
    let out = tempfile::tempdir().expect("an output directory");
    let dir = out.path();
    let mut observer = Observer::start_in(bin, dir, &["--profile-hz", "0"]);
    let mut runs = Vec::new();
    for variant in [Variant::Plain, Variant::Pie, Variant::Stripped] {
        let fixture = gofixture::build_tagged(&source(), &cache(), toolchain, variant, Some("memprofile"));
        let own = dir.join(format!("own-{}.pb.gz", runs.len()));
        let own_arg = own.display().to_string();
        let pid = allocate_watched(&mut observer, &fixture, SMALL, &["-allocs-out", &own_arg], &[("GODEBUG", RATE)]);
        runs.push((variant, pid, own));
    }
    let stopped = observer.stop();
    for (variant, pid, own) in runs {
        let what = format!("{toolchain:?} {variant:?} memprofile (pid {pid})");
        let (_, theirs) = pprof::top_of(&own, "alloc_space");
        let truth = theirs.first().unwrap_or_else(|| panic!("{what}: the fixture's own profile is empty"));
        let (_, ours) = alloc_rows(dir, pid, &stopped.summary);
        let top = ours.first().unwrap_or_else(|| panic!("{what}: an empty profile; {}", stopped.summary));
        assert_eq!(top.name, truth.name, "{what}: top site; ours:\n{}theirs:\n{}", show(&ours), show(&theirs));
        assert_eq!(top.name, SITE, "{what}: the fixture's top site");
        let e = error(top.flat, truth.flat);
        eprintln!("{what}: {SITE} {}B, the runtime's own {}B: {:.1}% apart", top.flat, truth.flat, 100.0 * e);
        assert!(e <= SAMPLED_WITHIN, "{what}: {}B vs the runtime's {}B ({:.1}%)", top.flat, truth.flat, 100.0 * e);
    }
}

/// The plain build: span refills and large allocations.
fn without_memory_profiling(bin: &Path, toolchain: Toolchain) {
    let out = tempfile::tempdir().expect("an output directory");
    let dir = out.path();
    let mut observer = Observer::start_in(bin, dir, &["--profile-hz", "0"]);
    let mut runs = Vec::new();
    for variant in [Variant::Plain, Variant::Pie, Variant::Stripped] {
        let fixture = gofixture::build_tagged(&source(), &cache(), toolchain, variant, None);
        for (work, within) in [(SMALL, SPANS_WITHIN), (LARGE, LARGE_WITHIN)] {
            let pid = allocate_watched(&mut observer, &fixture, work, &[], &[]);
            runs.push((variant, pid, work, within));
        }
    }
    let stopped = observer.stop();
    for (variant, pid, (n, size), within) in runs {
        let what = format!("{toolchain:?} {variant:?} without memory profiling, {n} × {size} B (pid {pid})");
        let (_, ours) = alloc_rows(dir, pid, &stopped.summary);
        let top = ours.first().unwrap_or_else(|| panic!("{what}: an empty profile; {}", stopped.summary));
        assert_eq!(top.name, SITE, "{what}: top site:\n{}", show(&ours));
        let e = error(top.flat, n * size);
        eprintln!(
            "{what}: {SITE} {}B of {}B allocated: {:+.1}%",
            top.flat,
            n * size,
            100.0 * (top.flat as f64 / (n * size) as f64 - 1.0)
        );
        assert!(
            e <= within,
            "{what}: {}B for {}B allocated ({:.1}%, bound {:.0}%)",
            top.flat,
            n * size,
            100.0 * e,
            100.0 * within
        );
    }
}
