//! The Grafana dashboards of `deploy/grafana/` against the real agent:
//!
//! - both decode strictly and are importable as they are (`dashboard::load`);
//! - every TraceQL query of the episodes dashboard that this host can
//!   satisfy (reset bursts, Go GC pressure) finds each attribute it filters
//!   on, with the compared value, and each one it shows, on spans of the
//!   name it asks for in the traces the agent exported; the memory.high and
//!   OOM kill queries are held in a VM (`episodes_vm.rs`);
//! - every metric name of every PromQL expression of the agent dashboard is
//!   in a scrape of the running agent.

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use observer_e2e::dashboard::{self, AGENT, Env, unmet_episode_queries};
use observer_e2e::episodes::{
    MEMORY_PRESSURE, NetnsHolder, TCP_RESET_BURST, closed_port, closed_port_burst, episodes_of, episodes_of_pid, show,
    unique_service,
};
use observer_e2e::gofixture::{self, GoFixture, Toolchain, Variant};
use observer_e2e::netns::Netns;
use observer_e2e::observer::Observer;
use observer_e2e::otlp::traces;
use observer_e2e::promql::{label_values_expr, metric_names};
use observer_e2e::require::require_root_and_bin;
use observer_e2e::scrape::{exposes, get};
use observer_e2e::traceql;

const ARRIVE_WITHIN: Duration = Duration::from_secs(30);
/// The fixture's heap near a tight `GOMEMLIMIT` (as `episodes.rs`): GC pressure.
const PRESSURE_WORK: &[&str] = &["-wait-stdin", "-live-mb", "32", "-allocs", "20000", "-alloc-size", "65536"];

fn resetgen() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_resetgen"))
}

fn gofixture_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("gofixtures")
}

#[test]
fn dashboards_decode_strictly_and_every_query_parses() {
    let episodes = dashboard::episodes();
    for p in &episodes.panels {
        for t in &p.targets {
            let q = t.query.as_deref().unwrap_or_default();
            traceql::parse(q).unwrap_or_else(|e| panic!("panel {:?}: {e}: {q}", p.title));
        }
    }
    let agent = dashboard::load(AGENT, "prometheus");
    for p in &agent.panels {
        for t in &p.targets {
            let expr = t.expr.as_deref().unwrap_or_default();
            assert!(!metric_names(expr).is_empty(), "panel {:?}: no metric in {expr}", p.title);
        }
    }
}

/// A reset burst in a fresh namespace and the Go fixture under a tight
/// `GOMEMLIMIT`, one agent seeing both: the host's queries each find what
/// they ask for in its `traces.jsonl`.
#[test]
fn host_queries_find_their_attributes_in_the_exported_traces() {
    let Some(bin) = require_root_and_bin() else { return };
    let fixture_bin = gofixture::build(&gofixture_cache(), Toolchain::Release("go1.27.4"), Variant::Plain);
    let ns = Netns::create();
    let service = unique_service("dashboards");
    let _holder = NetnsHolder::start(&ns, &service);
    let mut observer = Observer::start_with(&bin, &["--episode-quiet", "1s"]);

    let report = closed_port_burst(resetgen(), &ns, closed_port(0), 10, &service);
    assert!(report.sockets.iter().all(|s| s.errno.as_deref() == Some("ECONNREFUSED")), "the burst's sockets");
    let mut fixture = GoFixture::start(&fixture_bin, PRESSURE_WORK, &[("GOMEMLIMIT", "40MiB"), ("GOGC", "100")]);
    let pid = fixture.pid;
    observer.wait_for_stderr(&format!("observer: go: attached pid={pid} "), Duration::from_secs(10));
    fixture.go();
    fixture.finish(Duration::from_secs(120));
    let deadline = Instant::now() + ARRIVE_WITHIN;
    let arrived = |r: &[serde_json::Value]| {
        !episodes_of(r, TCP_RESET_BURST, &service).is_empty() && !episodes_of_pid(r, MEMORY_PRESSURE, pid).is_empty()
    };
    while !arrived(&observer.traces()) && Instant::now() < deadline {
        sleep(Duration::from_millis(200));
    }
    let stopped = observer.stop();
    let all = traces(&stopped.traces);
    assert!(arrived(&stopped.traces), "no reset burst of {service} or memory episode of pid {pid}:\n{}", show(&all));

    let checked = unmet_episode_queries(Env::Host, &all, &[]);
    eprintln!("host queries met: {:?}", checked.met);
    assert!(checked.skipped.is_empty(), "skipped on the host: {:?}", checked.skipped);
    let mut ours = episodes_of(&stopped.traces, TCP_RESET_BURST, &service);
    ours.extend(episodes_of_pid(&stopped.traces, MEMORY_PRESSURE, pid));
    assert!(
        checked.unmet.is_empty(),
        "queries the agent's traces do not satisfy:\n{}\nthe test's episodes:\n{}",
        checked.unmet.join("\n"),
        show(&ours)
    );
    let host = dashboard::EPISODE_PANELS.iter().filter(|(_, e)| *e == Env::Host).count();
    assert_eq!(checked.met.len(), host, "host panels checked");
}

/// Every metric name the agent dashboard reads (its panels and its
/// `instance` variable) is in a scrape of the running agent.
#[test]
fn every_promql_metric_is_in_a_scrape() {
    let Some(bin) = require_root_and_bin() else { return };
    let agent = dashboard::load(AGENT, "prometheus");
    let observer = Observer::start(&bin);
    let mut exprs: Vec<(String, String)> = Vec::new();
    for p in &agent.panels {
        exprs.extend(p.targets.iter().map(|t| (p.title.clone(), t.expr.clone().unwrap_or_default())));
    }
    for v in agent.templating.list.iter().filter(|v| v.kind == "query") {
        let expr = label_values_expr(&v.query).unwrap_or_else(|| panic!("variable {}: {}", v.name, v.query));
        exprs.push((format!("variable {}", v.name), expr.to_string()));
    }
    let missing_from = |body: &str| -> Vec<String> {
        exprs
            .iter()
            .flat_map(|(what, expr)| metric_names(expr).into_iter().map(move |name| (what, expr, name)))
            .filter(|(_, _, name)| !exposes(body, name))
            .map(|(what, expr, name)| format!("{what}: {name} in {expr}"))
            .collect()
    };
    // The pipeline publishes its numbers once a second: the first scrape
    // after the start may come before the sources' first figures.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (body, missing) = loop {
        let (status, body) = get(observer.metrics_addr(), "/metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        let missing = missing_from(&body);
        if missing.is_empty() || Instant::now() >= deadline {
            break (body, missing);
        }
        sleep(Duration::from_millis(500));
    };
    drop(observer.stop());
    let used: usize = exprs.iter().map(|(_, e)| metric_names(e).len()).sum();
    assert!(used >= exprs.len(), "{used} metric names in {} expressions", exprs.len());
    assert!(missing.is_empty(), "metrics not in the agent's scrape:\n{}\nscrape:\n{body}", missing.join("\n"));
}
