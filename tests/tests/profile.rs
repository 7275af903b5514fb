//! CPU profiles, read back by `go tool pprof` (`-symbolize=none`: the names
//! must be in the file, which the agent took from `.gopclntab`):
//! - the fixture spinning in `main.spin` is that function, first, with at
//!   least 80% of the samples, for every release and for plain, PIE and
//!   stripped builds, and the stripped build names the same functions;
//! - a `memory.pressure` episode's root span names its profile, a file
//!   whose sample count is the one the span gives;
//! - that profile reaches the collector as an OTLP profile (gRPC and
//!   HTTP/protobuf): its id the span's, every sample linked to the episode's
//!   trace and root span as the same collector received them, the same
//!   sample count as the pprof file, the workload's resource;
//! - its flame graph lies next to the pprof file, an SVG naming `main.spin`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use observer_e2e::collector::{Collector, Receiver, require_otelcol};
use observer_e2e::episodes::{MEMORY_PRESSURE, episodes_of_pid};
use observer_e2e::gofixture::{self, GoFixture, Toolchain, Variant};
use observer_e2e::observer::{Observer, Stopped};
use observer_e2e::otlp::int;
use observer_e2e::pprof::{self, Row};
use observer_e2e::require::require_root_and_bin;
use rstest::rstest;

const ATTACH_WITHIN: Duration = Duration::from_secs(20);
const RUN_WITHIN: Duration = Duration::from_secs(120);
/// Long enough for ~57 samples at 19 Hz: 80% is then well clear of noise.
const SPIN: &str = "3s";
/// The share of samples the hot function must have at least.
const HOT_SHARE: f64 = 80.0;
/// The functions on the hot stack from `cum ≥` this share.
const ON_THE_HOT_STACK: f64 = 50.0;

fn gofixture_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("gofixtures")
}

/// Runs the fixture watched, spinning; its pid.
fn spin_watched(observer: &mut Observer, fixture: &Path, extra: &[&str], env: &[(&str, &str)]) -> u32 {
    let mut args = vec!["-wait-stdin", "-spin", SPIN, "-settle", "0s"];
    args.extend_from_slice(extra);
    let mut run = GoFixture::start(fixture, &args, env);
    let pid = run.pid;
    observer.wait_for_stderr(&format!("observer: go: attached pid={pid} "), ATTACH_WITHIN);
    run.go();
    run.finish(RUN_WITHIN);
    pid
}

/// The CPU window files of `pid` in the agent's output directory.
fn windows_of(dir: &Path, pid: u32) -> Vec<PathBuf> {
    pprof::window_files(dir, pid, "cpu")
}

/// Rows of every file summed by function (windows split a run).
fn summed(files: &[PathBuf], cum: bool) -> (u64, Vec<Row>) {
    let mut total = 0;
    let mut rows: Vec<Row> = Vec::new();
    for f in files {
        let (t, rs) = pprof::top(f, cum);
        total += t;
        for r in rs {
            match rows.iter_mut().find(|x| x.name == r.name) {
                Some(x) => {
                    x.flat += r.flat;
                    x.cum += r.cum;
                }
                None => rows.push(r),
            }
        }
    }
    for r in &mut rows {
        r.flat_pct = 100.0 * r.flat as f64 / total.max(1) as f64;
        r.cum_pct = 100.0 * r.cum as f64 / total.max(1) as f64;
    }
    rows.sort_by(|a, b| if cum { b.cum.cmp(&a.cum) } else { b.flat.cmp(&a.flat) });
    (total, rows)
}

fn show(rows: &[Row]) -> String {
    rows.iter().take(12).map(|r| format!("{:>5} {:>6.2}% {:>5} {}\n", r.flat, r.flat_pct, r.cum, r.name)).collect()
}

#[rstest]
fn cpu_profile_names_the_hot_function(
    #[values("go1.22.12", "go1.23.12", "go1.24.13", "go1.25.14", "go1.26.11", "go1.27.4")] release: &'static str,
) {
    assert!(gofixture::RELEASES.contains(&release), "{release} is not in gofixture::RELEASES");
    let Some(bin) = require_root_and_bin() else { return };
    let variants = [Variant::Plain, Variant::Pie, Variant::Stripped];
    let fixtures: Vec<PathBuf> =
        variants.iter().map(|&v| gofixture::build(&gofixture_cache(), Toolchain::Release(release), v)).collect();
    let out = tempfile::tempdir().expect("an output directory");
    let dir = out.path();
    let mut observer = Observer::start_in(&bin, dir, &[]);
    let pids: Vec<u32> = fixtures.iter().map(|f| spin_watched(&mut observer, f, &[], &[])).collect();
    let stopped = observer.stop();

    let mut stacks = Vec::new();
    let mut all = 0;
    for ((variant, pid), fixture) in variants.iter().zip(&pids).zip(&fixtures) {
        let files = windows_of(dir, *pid);
        assert!(!files.is_empty(), "{variant:?}: no window profile of pid {pid}; {}", stopped.summary);
        let (total, rows) = summed(&files, false);
        all += total;
        let what = format!("{release} {variant:?} ({}), {} file(s)", fixture.display(), files.len());
        let hot = rows.first().unwrap_or_else(|| panic!("{what}: an empty profile"));
        assert_eq!(hot.name, "main.spin", "{what}: the hottest function; top:\n{}", show(&rows));
        assert!(
            hot.flat_pct >= HOT_SHARE,
            "{what}: main.spin has {:.1}% of {total} samples:\n{}",
            hot.flat_pct,
            show(&rows)
        );
        let (_, by_cum) = summed(&files, true);
        let mut stack: Vec<String> =
            by_cum.iter().filter(|r| r.cum_pct >= ON_THE_HOT_STACK).map(|r| r.name.clone()).collect();
        stack.sort();
        stacks.push((*variant, stack));
    }
    // Named alike with and without symbols (and DWARF): all from .gopclntab.
    let plain = &stacks[0].1;
    assert!(plain.iter().any(|n| n == "main.main"), "the hot stack of the plain build: {plain:?}");
    for (variant, stack) in &stacks[1..] {
        assert_eq!(stack, plain, "{variant:?} names the hot stack differently from the plain build");
    }
    // Each sample is in one window only.
    let counted = observer_e2e::observer::summary_field(&stopped.summary, "profile_samples").expect("profile_samples=");
    assert!(
        all <= counted,
        "{all} samples in the windows of the fixtures, {counted} counted in all: {}",
        stopped.summary
    );
}

/// The fixture's live heap near a tight `GOMEMLIMIT` (as in `episodes.rs`).
const PRESSURE_WORK: &[&str] = &["-live-mb", "32", "-allocs", "20000", "-alloc-size", "65536"];
const PRESSURE_ENV: &[(&str, &str)] = &[("GOMEMLIMIT", "40MiB"), ("GOGC", "100")];

/// The fixture spinning, then under memory pressure, watched by an agent
/// writing into `dir`, until its episode is in `traces.jsonl`: the stopped
/// agent and the fixture's pid.
fn pressure_run(bin: &Path, dir: &Path) -> (Stopped, u32) {
    // With symbols: a stripped binary's cycles have no figures to tell pressure by.
    let fixture = gofixture::build(&gofixture_cache(), Toolchain::Release("go1.27.4"), Variant::Plain);
    let mut observer = Observer::start_in(bin, dir, &["--episode-quiet", "1s"]);
    let pid = spin_watched(&mut observer, &fixture, PRESSURE_WORK, PRESSURE_ENV);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while episodes_of_pid(&observer.traces(), MEMORY_PRESSURE, pid).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    (observer.stop(), pid)
}

#[test]
fn episode_root_span_names_its_cpu_profile() {
    let Some(bin) = require_root_and_bin() else { return };
    let out = tempfile::tempdir().expect("an output directory");
    let dir = out.path();
    let (stopped, pid) = pressure_run(&bin, dir);
    let episodes = episodes_of_pid(&stopped.traces, MEMORY_PRESSURE, pid);
    assert!(!episodes.is_empty(), "no {MEMORY_PRESSURE} episode of pid {pid}: {}", stopped.summary);
    let mut named = 0;
    for ep in &episodes {
        let root = ep.root();
        let Some(file) = root.attributes.str("observer.profile.cpu.file") else { continue };
        named += 1;
        assert_eq!(file, format!("profiles/{}.cpu.pb.gz", ep.trace_id), "the file is named by the trace id");
        let id = root.attributes.str("observer.profile.cpu.id").expect("observer.profile.cpu.id");
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "profile id {id:?}");
        let samples = root.attributes.u64("observer.profile.cpu.samples").expect("observer.profile.cpu.samples");
        let path = dir.join(file);
        let (total, rows) = pprof::top(&path, false);
        assert_eq!(total, samples, "samples in {} vs the span's count; top:\n{}", path.display(), show(&rows));
        assert!(rows.iter().any(|r| r.name.starts_with("main.") || r.name.starts_with("runtime.")), "{}", show(&rows));
    }
    assert!(named > 0, "no episode of pid {pid} names a CPU profile: {}", stopped.summary);
    // And its allocations: the fixture's 64 KiB allocations in main.allocate
    // (sampled as large allocations: the fixture links no memory profile).
    let mut allocs = 0;
    for ep in &episodes {
        let root = ep.root();
        let Some(file) = root.attributes.str("observer.profile.alloc.file") else { continue };
        allocs += 1;
        assert_eq!(file, format!("profiles/{}.alloc.pb.gz", ep.trace_id), "the file is named by the trace id");
        let (_, rows) = pprof::top_of(&dir.join(file), "alloc_space");
        // Inlined into main.main in this fixture: `main.allocate (inline)`.
        let top = rows.first().and_then(|r| r.name.split(' ').next());
        assert_eq!(top, Some("main.allocate"), "the episode's top allocation site; {}", show(&rows));
        assert!(dir.join(format!("profiles/{}.alloc.svg", ep.trace_id)).is_file(), "its flame graph");
    }
    assert!(allocs > 0, "no episode of pid {pid} names an allocation profile: {}", stopped.summary);
}

/// An OTLP profile as the collector's file exporter wrote it (OTLP JSON).
struct OtlpProfile {
    pid: Option<i64>,
    resource: serde_json::Value,
    /// Per sample: its values' sum, and its link's (trace id, span id).
    samples: Vec<(i64, Option<(String, String)>)>,
}

/// The profiles the collector wrote, by profile id (hex).
fn otlp_profiles(requests: &[serde_json::Value]) -> std::collections::HashMap<String, OtlpProfile> {
    let mut found = std::collections::HashMap::new();
    for request in requests {
        let links = request["dictionary"]["linkTable"].as_array().cloned().unwrap_or_default();
        let strings = request["dictionary"]["stringTable"].as_array().cloned().unwrap_or_default();
        let link = |i: i64| {
            let l = links.get(usize::try_from(i).ok()?)?;
            Some((l["traceId"].as_str()?.to_ascii_lowercase(), l["spanId"].as_str()?.to_ascii_lowercase()))
        };
        for rp in request["resourceProfiles"].as_array().into_iter().flatten() {
            // The collector may write keys (and string values) as string table indices.
            let key = |kv: &serde_json::Value| match kv["key"].as_str() {
                Some(k) => Some(k.to_string()),
                None => {
                    strings.get(usize::try_from(kv.get("keyStrindex").and_then(int)?).ok()?)?.as_str().map(String::from)
                }
            };
            let pid = rp["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|kv| key(kv).as_deref() == Some("process.pid"))
                .and_then(|kv| int(&kv["value"]["intValue"]));
            for sp in rp["scopeProfiles"].as_array().into_iter().flatten() {
                for p in sp["profiles"].as_array().into_iter().flatten() {
                    let samples = p["samples"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| {
                            let values = s["values"].as_array().into_iter().flatten().filter_map(int).sum();
                            (values, link(s.get("linkIndex").and_then(int).unwrap_or(0)))
                        })
                        .collect();
                    let id = p["profileId"].as_str().unwrap_or_default().to_ascii_lowercase();
                    found.insert(id, OtlpProfile { pid, resource: rp["resource"].clone(), samples });
                }
            }
        }
    }
    found
}

#[rstest]
#[case::grpc(Receiver::GRPC)]
#[case::http_protobuf(Receiver::HTTP)]
fn episode_profile_reaches_the_collector_linked_to_its_trace(#[case] receiver: Receiver) {
    let Some(bin) = require_root_and_bin() else { return };
    if require_otelcol().is_none() {
        return;
    }
    let fixture = gofixture::build(&gofixture_cache(), Toolchain::Release("go1.27.4"), Variant::Plain);
    let collector = Collector::start(receiver);
    let mut observer = Observer::start_env(&bin, &["--episode-quiet", "1s"], &collector.otlp_env());
    let pid = spin_watched(&mut observer, &fixture, PRESSURE_WORK, PRESSURE_ENV);
    // Until an episode naming a profile is in the collector's traces and that profile in its profiles.
    let named = |traces: &[serde_json::Value]| -> Vec<(String, String, String, u64)> {
        episodes_of_pid(traces, MEMORY_PRESSURE, pid)
            .iter()
            .filter_map(|ep| {
                let root = ep.root();
                let id = root.attributes.str("observer.profile.cpu.id")?.to_ascii_lowercase();
                let samples = root.attributes.u64("observer.profile.cpu.samples")?;
                Some((ep.trace_id.clone(), root.span_id.clone(), id, samples))
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let (mut episodes, mut profiles) = (Vec::new(), std::collections::HashMap::new());
    while std::time::Instant::now() < deadline {
        episodes = named(&collector.traces());
        profiles = otlp_profiles(&collector.profiles());
        if !episodes.is_empty() && episodes.iter().all(|(_, _, id, _)| profiles.contains_key(id)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!episodes.is_empty(), "no {MEMORY_PRESSURE} episode of pid {pid} naming a profile reached the collector");
    let dir = observer.output_dir().to_path_buf();
    for (trace_id, span_id, id, samples) in &episodes {
        let profile = profiles.get(id).unwrap_or_else(|| {
            panic!(
                "profile {id} of trace {trace_id} not at the collector ({} profiles there: {:?}); collector stderr:\n{}",
                profiles.len(),
                profiles.keys().collect::<Vec<_>>(),
                collector.stderr()
            )
        });
        let link = Some((trace_id.clone(), span_id.clone()));
        assert!(!profile.samples.is_empty(), "profile {id}: no samples");
        assert!(
            profile.samples.iter().all(|(_, l)| *l == link),
            "profile {id}: every sample links to trace {trace_id} span {span_id}: {:?}",
            profile.samples.iter().map(|(_, l)| l).collect::<Vec<_>>()
        );
        let total: i64 = profile.samples.iter().map(|(v, _)| v).sum();
        let (in_file, _) = pprof::top(&dir.join(format!("profiles/{trace_id}.cpu.pb.gz")), false);
        assert_eq!(total as u64, in_file, "profile {id}: samples at the collector vs the pprof file");
        assert_eq!(in_file, *samples, "profile {id}: the pprof file vs the span's count");
        assert_eq!(profile.pid, Some(i64::from(pid)), "profile {id}: the workload's resource: {}", profile.resource);
    }
    let stopped = observer.stop();
    let sent = observer_e2e::observer::summary_field(&stopped.summary, "otlp_profiles").expect("otlp_profiles=");
    assert!(sent >= episodes.len() as u64, "{}", stopped.summary);
    assert_eq!(
        observer_e2e::observer::summary_field(&stopped.summary, "otlp_profiles_failed"),
        Some(0),
        "{}",
        stopped.summary
    );
}

#[test]
fn episode_profile_has_a_flame_graph_next_to_it() {
    let Some(bin) = require_root_and_bin() else { return };
    let out = tempfile::tempdir().expect("an output directory");
    let dir = out.path();
    let (stopped, pid) = pressure_run(&bin, dir);
    let episodes = episodes_of_pid(&stopped.traces, MEMORY_PRESSURE, pid);
    let files: Vec<String> = episodes
        .iter()
        .filter_map(|ep| ep.root().attributes.str("observer.profile.cpu.file").map(String::from))
        .collect();
    assert!(!files.is_empty(), "no {MEMORY_PRESSURE} episode of pid {pid} names a CPU profile: {}", stopped.summary);
    let mut spin = false;
    for file in &files {
        let svg_path = dir.join(file.replace(".cpu.pb.gz", ".cpu.svg"));
        let svg = std::fs::read_to_string(&svg_path).unwrap_or_else(|e| panic!("{}: {e}", svg_path.display()));
        let body = svg.trim();
        assert!(
            body.starts_with("<?xml") && body.contains("<svg") && body.ends_with("</svg>"),
            "{}: not an SVG document",
            svg_path.display()
        );
        // inferno nests one `<svg>` in the document's: opened as often as closed.
        assert_eq!(body.matches("<svg").count(), body.matches("</svg>").count(), "{}", svg_path.display());
        // The pprof file's hottest functions are in the graph too.
        let (_, rows) = pprof::top(&dir.join(file), false);
        for row in rows.iter().filter(|r| r.flat_pct >= 10.0) {
            assert!(svg.contains(&row.name), "{}: no {}; pprof top:\n{}", svg_path.display(), row.name, show(&rows));
        }
        spin |= svg.contains("main.spin");
    }
    // The spin just before the pressure falls in the 5 s slice the episode starts in.
    assert!(spin, "no flame graph of pid {pid} names main.spin: {files:?}");
}
