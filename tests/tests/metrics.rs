//! The agent's endpoints, scraped from a running agent: the per-workload
//! counters of `/metrics` against independent truths — resets sent in the
//! test's own namespace against `nstat` `TcpOutRsts`, resets received
//! against the errors the generator's sockets saw, GC cycles of a Go
//! fixture against its `GODEBUG=gctrace=1` lines — the exposition linted
//! by a real `promtool check metrics`, and `/healthz` and `/readyz`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use observer_e2e::episodes::{NetnsHolder, closed_port, closed_port_burst, unique_service};
use observer_e2e::gofixture::{self, GoFixture, Toolchain, Variant, gctrace_cycles};
use observer_e2e::netns::Netns;
use observer_e2e::nstat::nstat;
use observer_e2e::observer::Observer;
use observer_e2e::require::{require_file_env, require_root_and_bin};
use observer_e2e::scrape::{Sample, get, samples, sum};

const N: usize = 10;
/// From the events to the counters: the pipeline publishes once a second.
const COUNTED_WITHIN: Duration = Duration::from_secs(20);
const ATTACH_WITHIN: Duration = Duration::from_secs(10);
const RUN_WITHIN: Duration = Duration::from_secs(60);
const WORK: &[&str] = &["-wait-stdin", "-allocs", "10000", "-alloc-size", "65536", "-forced-gcs", "2"];

fn resetgen() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_resetgen"))
}

fn scrape(agent: &Observer) -> (String, Vec<Sample>) {
    let (status, body) = get(agent.metrics_addr(), "/metrics");
    assert_eq!(status, 200, "/metrics: {body}");
    let parsed = samples(&body);
    (body, parsed)
}

/// Scrapes until `value` of a scrape reaches `want` (or the time is up),
/// then once more a second later: a counter that goes past its truth fails.
fn settled(agent: &Observer, want: f64, value: impl Fn(&[Sample]) -> f64) -> f64 {
    let deadline = Instant::now() + COUNTED_WITHIN;
    while value(&scrape(agent).1) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    value(&scrape(agent).1)
}

#[test]
fn reset_and_gc_counters_equal_their_truths() {
    let Some(bin) = require_root_and_bin() else { return };
    let ns = Netns::create();
    let service = unique_service("metrics");
    let _holder = NetnsHolder::start(&ns, &service);
    let mut agent = Observer::start(&bin);
    let (status, body) = get(agent.metrics_addr(), "/readyz");
    assert_eq!((status, body.as_str()), (200, "ready\n"), "/readyz once the agent said it is ready");

    let before = nstat(&ns, "TcpOutRsts");
    let report = closed_port_burst(resetgen(), &ns, closed_port(0), N, &service);
    let sent_truth = nstat(&ns, "TcpOutRsts") - before;
    assert_eq!(sent_truth, N as u64, "TcpOutRsts delta in {}", ns.name());
    let refused = report.sockets.iter().filter(|s| s.errno.as_deref() == Some("ECONNREFUSED")).count();
    assert_eq!(refused, N, "sockets that received the reset (ECONNREFUSED)");
    let of = [("service_name", service.as_str())];
    let sent = settled(&agent, sent_truth as f64, |s| sum(s, "observer_tcp_resets_sent_total", &of));
    assert_eq!(sent, sent_truth as f64, "observer_tcp_resets_sent_total{{service_name={service}}} vs TcpOutRsts");
    let received = sum(&scrape(&agent).1, "observer_tcp_resets_received_total", &of);
    assert_eq!(received, refused as f64, "observer_tcp_resets_received_total vs the sockets' ECONNREFUSED");

    let fixture_service = unique_service("metrics-go");
    let fixture_bin = gofixture::build(&cache_dir(), Toolchain::Release("go1.27.4"), Variant::Plain);
    let mut fixture =
        GoFixture::start(&fixture_bin, WORK, &[("GODEBUG", "gctrace=1"), ("OTEL_SERVICE_NAME", &fixture_service)]);
    agent.wait_for_stderr(&format!("observer: go: attached pid={} ", fixture.pid), ATTACH_WITHIN);
    // Waiting on stdin, watched: the source's own gauges say so.
    let watched = settled(&agent, 1.0, |s| sum(s, "observer_go_processes_watched", &[]));
    assert!(watched >= 1.0, "observer_go_processes_watched with the fixture attached: {watched}");
    assert_eq!(sum(&scrape(&agent).1, "observer_go_probe_attach_errors_total", &[]), 0.0, "probe attach errors");
    fixture.go();
    let finished = fixture.finish(RUN_WITHIN);
    let cycles = gctrace_cycles(&finished.stderr).len() as f64;
    assert!(cycles > 0.0, "the fixture ran no GC cycle; stderr:\n{}", finished.stderr);
    let of = [("service_name", fixture_service.as_str())];
    let counted = settled(&agent, cycles, |s| sum(s, "observer_go_gc_cycles_total", &of));
    assert_eq!(counted, cycles, "observer_go_gc_cycles_total vs gctrace's `gc N` lines");

    let (text, parsed) = scrape(&agent);
    for family in ["observer_records_total", "observer_episodes_closed_total", "observer_ring_lost_total"] {
        assert!(parsed.iter().any(|s| s.name == family), "no {family} in:\n{text}");
    }
    // One series per signal whose program queues records, summing to the total.
    let lost_signals: Vec<&str> = parsed
        .iter()
        .filter(|s| s.name == "observer_ring_lost_total")
        .filter_map(|s| s.labels.iter().find(|(k, _)| k == "signal").map(|(_, v)| v.as_str()))
        .collect();
    for signal in ["tcp.reset.sent", "tcp.reset.received", "net.drop", "memcg.oom_kill", "go.gc", "process.lifecycle"] {
        assert!(lost_signals.contains(&signal), "no observer_ring_lost_total{{signal=\"{signal}\"}} in:\n{text}");
    }
    let lost = sum(&parsed, "observer_ring_lost_total", &[]);
    let stopped = agent.stop();
    assert_eq!(lost, stopped.lost as f64, "observer_ring_lost_total vs the stopped line's lost=");
}

/// `promtool check metrics` (Prometheus' own linter) on a real scrape.
#[test]
fn promtool_accepts_the_exposition() {
    let Some(bin) = require_root_and_bin() else { return };
    let Some(promtool) =
        require_file_env("OBSERVER_PROMTOOL", "`cargo xtask setup` builds promtool and `cargo xtask test` sets it")
    else {
        return;
    };
    let ns = Netns::create();
    let service = unique_service("metrics-lint");
    let _holder = NetnsHolder::start(&ns, &service);
    let agent = Observer::start(&bin);
    closed_port_burst(resetgen(), &ns, closed_port(1), N, &service);
    let of = [("service_name", service.as_str())];
    settled(&agent, N as f64, |s| sum(s, "observer_tcp_resets_sent_total", &of));
    let (text, _) = scrape(&agent);
    let (ok, output) = promtool_check(&promtool, &text);
    assert!(ok, "promtool check metrics:\n{output}\nscrape:\n{text}");
    let (status, _) = get(agent.metrics_addr(), "/healthz");
    assert_eq!(status, 200, "/healthz");
    let (status, _) = get(agent.metrics_addr(), "/no-such-path");
    assert_eq!(status, 404);
    agent.stop();
}

/// `promtool check metrics` reads the exposition on stdin: (passed, what it said).
fn promtool_check(promtool: &Path, text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", promtool.display()));
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("writing the scrape");
    let out = child.wait_with_output().expect("promtool's output");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("gofixtures")
}

fn deploy_prometheus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// The shipped alert rules: valid (`promtool check rules`), and firing on
/// the series their unit tests give, with the labels and text they expect
/// (`promtool test rules`).
#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    let Some(promtool) =
        require_file_env("OBSERVER_PROMTOOL", "`cargo xtask setup` builds promtool and `cargo xtask test` sets it")
    else {
        return;
    };
    let dir = deploy_prometheus();
    for args in [&["check", "rules", "observer-rules.yaml"][..], &["test", "rules", "observer-rules.test.yaml"][..]] {
        let out = Command::new(&promtool).args(args).current_dir(&dir).output().expect("running promtool");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {}:\n{said}", args.join(" "));
    }
}

/// The PrometheusRule carries exactly the plain rules file's groups.
#[test]
fn prometheus_rule_has_the_rules_files_groups() {
    let dir = deploy_prometheus();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let plain = read("observer-rules.yaml");
    let groups = plain.split_once("groups:\n").expect("a groups key").1;
    let cr = read("observer-prometheusrule.yaml");
    let spec = cr.split_once("spec:\n  groups:\n").expect("spec.groups").1;
    let unindented: String =
        spec.lines().map(|l| l.strip_prefix("  ").unwrap_or(l)).map(|l| format!("{l}\n")).collect();
    assert_eq!(unindented, groups, "observer-prometheusrule.yaml spec.groups vs observer-rules.yaml groups");
}
