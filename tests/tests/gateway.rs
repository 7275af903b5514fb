//! The gateway collector config we ship (`deploy/collector/gateway.yaml`),
//! run as is by the real OpenTelemetry Collector, only its endpoints and
//! sampling share set through the variables it documents, in front of a
//! real Jaeger v2; what arrives is read back through Jaeger's query API.
//!
//! - Keeping every episode: the agent's reset-burst episode is found in
//!   Jaeger by its service name, under the trace id the agent wrote, with
//!   the kernel's reset count (`nstat` `TcpOutRsts`) on its root.
//! - Keeping none of the ordinary ones: the agent's reset burst and a plain
//!   trace are dropped, while a trace with an ERROR status and one closed by
//!   an OOM kill are kept — the tail-sampling policies, each shown to act.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use observer_e2e::collector::{free_port, require_otelcol};
use observer_e2e::command::wait_within;
use observer_e2e::episodes::{
    CLOSE_REASON, COUNT_RESET_SENT, NetnsHolder, TCP_RESET_BURST, closed_port, closed_port_burst, episodes_of,
    expect_export_counts, unique_service,
};
use observer_e2e::jaeger::{Jaeger, JaegerTrace, require_jaeger};
use observer_e2e::netns::Netns;
use observer_e2e::nstat::nstat;
use observer_e2e::observer::Observer;
use observer_e2e::require::require_root_and_bin;
use serde_json::{Value, json};

const N: usize = 10;
/// A short hold before the sampling decision (the config's default is 10s).
const DECISION_WAIT: &str = "2s";
const ARRIVE_WITHIN: Duration = Duration::from_secs(45);
const READY_WITHIN: Duration = Duration::from_secs(30);

fn config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/collector/gateway.yaml")
}

/// The collector running `deploy/collector/gateway.yaml`, exporting to Jaeger.
struct Gateway {
    child: Child,
    grpc: u16,
    http: u16,
    log: tempfile::NamedTempFile,
}

impl Gateway {
    fn start(otelcol: &Path, jaeger: &Jaeger, sample_percent: u32) -> Gateway {
        let (grpc, http, telemetry) = (free_port(), free_port(), free_port());
        let log = tempfile::NamedTempFile::new().expect("gateway log");
        let child = Command::new(otelcol)
            .arg(format!("--config={}", config().display()))
            .env("OBSERVER_GATEWAY_GRPC", format!("127.0.0.1:{grpc}"))
            .env("OBSERVER_GATEWAY_HTTP", format!("127.0.0.1:{http}"))
            .env("OBSERVER_GATEWAY_TELEMETRY_HOST", "127.0.0.1")
            .env("OBSERVER_GATEWAY_TELEMETRY_PORT", telemetry.to_string())
            .env("OBSERVER_TEMPO_ENDPOINT", jaeger.otlp_endpoint())
            .env("OBSERVER_TEMPO_INSECURE", "true")
            .env("OBSERVER_SAMPLE_PERCENT", sample_percent.to_string())
            .env("OBSERVER_DECISION_WAIT", DECISION_WAIT)
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log"))
            .stderr(log.reopen().expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", otelcol.display()));
        let mut gateway = Gateway { child, grpc, http, log };
        let deadline = Instant::now() + observer_e2e::bound(READY_WITHIN);
        while TcpStream::connect(("127.0.0.1", grpc)).is_err() || TcpStream::connect(("127.0.0.1", http)).is_err() {
            if let Ok(Some(exit)) = gateway.child.try_wait() {
                panic!("the gateway collector exited with {exit}:\n{}", gateway.log());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway is not listening within {READY_WITHIN:?}:\n{}",
                gateway.log()
            );
            sleep(Duration::from_millis(100));
        }
        gateway
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The agent's exporter settings for this gateway (OTLP/gRPC).
    fn otlp_env(&self) -> Vec<(String, std::ffi::OsString)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), format!("http://127.0.0.1:{}", self.grpc).into()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
        ]
    }

    /// Sends one single-span trace of `service` over OTLP/HTTP JSON, as any
    /// instrumented service would: the policies judge status and attributes,
    /// whoever sent them.
    fn send_trace(&self, service: &str, status_code: u32, attributes: Value) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos();
        let trace_id = format!("{:032x}", now ^ 0x5eed_0000_0000_0000_0000_0000_0000_0001);
        let request = json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"scope": {"name": "gateway-test"}, "spans": [{
                "traceId": trace_id, "spanId": "00000000000000a1", "name": "memory.pressure", "kind": 1,
                "startTimeUnixNano": (now - 1_000_000).to_string(), "endTimeUnixNano": now.to_string(),
                "attributes": attributes, "status": {"code": status_code}
            }]}]
        }]});
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(request.to_string())
            .arg(format!("http://127.0.0.1:{}/v1/traces", self.http))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "OTLP/HTTP to the gateway:\n{}", self.log());
        trace_id
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        wait_within(&mut self.child, Duration::from_secs(15));
    }
}

struct Prerequisites {
    bin: PathBuf,
    otelcol: PathBuf,
}

fn prerequisites() -> Option<Prerequisites> {
    let bin = require_root_and_bin()?;
    let otelcol = require_otelcol()?;
    require_jaeger()?;
    Some(Prerequisites { bin, otelcol })
}

/// A reset burst of N in a fresh namespace whose workload is `service`,
/// through an agent exporting to `gateway`. Returns the kernel's count
/// and the trace id the agent wrote for it.
fn burst_through(p: &Prerequisites, gateway: &Gateway, tag: &str) -> (String, u64, String) {
    let ns = Netns::create();
    let holder = NetnsHolder::start(&ns, &unique_service(tag));
    let service = holder.service_name.clone();
    let observer = Observer::start_env(&p.bin, &["--episode-quiet", "1s"], &gateway.otlp_env());
    let before = nstat(&ns, "TcpOutRsts");
    closed_port_burst(Path::new(env!("CARGO_BIN_EXE_resetgen")), &ns, closed_port(0), N, &service);
    let sent = nstat(&ns, "TcpOutRsts") - before;
    assert_eq!(sent, N as u64, "TcpOutRsts delta for {N} closed-port connections");
    let deadline = Instant::now() + observer_e2e::bound(ARRIVE_WITHIN);
    while episodes_of(&observer.traces(), TCP_RESET_BURST, &service).is_empty() && Instant::now() < deadline {
        sleep(Duration::from_millis(200));
    }
    let stopped = observer.stop();
    let own = episodes_of(&stopped.traces, TCP_RESET_BURST, &service);
    assert_eq!(own.len(), 1, "{TCP_RESET_BURST} episodes of {service} in the agent's own file");
    let counts = expect_export_counts(&stopped.summary);
    assert!(counts.exported >= 1 && counts.failed == 0, "the agent's export to the gateway: {}", stopped.summary);
    (service, sent, own[0].trace_id.clone())
}

/// Jaeger prints a trace id without its leading zeros.
fn same_trace_id(jaeger: &str, otlp: &str) -> bool {
    u128::from_str_radix(jaeger, 16).ok() == u128::from_str_radix(otlp, 16).ok()
}

fn root_of(trace: &JaegerTrace) -> &serde_json::Map<String, Value> {
    &trace.spans.iter().find(|(name, _)| name == TCP_RESET_BURST).unwrap_or_else(|| panic!("no root: {trace:?}")).1
}

#[test]
fn a_reset_burst_reaches_jaeger_through_the_gateway() {
    let Some(p) = prerequisites() else { return };
    let jaeger = Jaeger::start();
    let gateway = Gateway::start(&p.otelcol, &jaeger, 100);
    let (service, sent, trace_id) = burst_through(&p, &gateway, "gw-all");

    let found = jaeger.wait_for_traces(&service, 1, ARRIVE_WITHIN);
    assert_eq!(found.len(), 1, "traces of {service} in Jaeger; gateway log:\n{}", gateway.log());
    let trace = &found[0];
    assert!(same_trace_id(&trace.trace_id, &trace_id), "Jaeger's trace {} vs the agent's {trace_id}", trace.trace_id);
    assert_eq!(trace.service, service);
    let root = root_of(trace);
    assert_eq!(root.get(COUNT_RESET_SENT).and_then(Value::as_u64), Some(sent), "{COUNT_RESET_SENT} vs nstat: {root:?}");
    assert_eq!(root.get(CLOSE_REASON).and_then(Value::as_str), Some("quiet"), "{root:?}");
    let resets = trace.spans.iter().filter(|(name, _)| name == "tcp.reset").count();
    assert!(resets >= 1, "tcp.reset children in Jaeger: {trace:?}");
    let host = nix::unistd::gethostname().expect("hostname").to_string_lossy().into_owned();
    assert_eq!(trace.process_tags.get("host.name").and_then(Value::as_str), Some(host.as_str()), "{trace:?}");
}

#[test]
fn errors_and_oom_kills_are_kept_when_the_rest_is_not() {
    let Some(p) = prerequisites() else { return };
    let jaeger = Jaeger::start();
    let gateway = Gateway::start(&p.otelcol, &jaeger, 0);
    let (burst_service, _, _) = burst_through(&p, &gateway, "gw-none");
    // Sent after the agent's episode: once these are decided and stored,
    // the episode's own decision is long made.
    let tag = unique_service("gw-synthetic");
    let errored = format!("{tag}-error");
    let oom = format!("{tag}-oom");
    let plain = format!("{tag}-plain");
    gateway.send_trace(&errored, 2, json!([]));
    gateway.send_trace(&oom, 0, json!([{"key": CLOSE_REASON, "value": {"stringValue": "oom_kill"}}]));
    gateway.send_trace(&plain, 0, json!([{"key": CLOSE_REASON, "value": {"stringValue": "quiet"}}]));

    for service in [&errored, &oom] {
        let found = jaeger.wait_for_traces(service, 1, ARRIVE_WITHIN);
        assert_eq!(found.len(), 1, "a trace of {service} must be kept at 0%; gateway log:\n{}", gateway.log());
    }
    for service in [&burst_service, &plain] {
        assert_eq!(jaeger.traces(service).len(), 0, "{service}'s trace must be sampled out at 0%");
    }
}
