//! A real Jaeger v2 (pinned, built by `cargo xtask setup`) with in-memory
//! storage on loopback ports of its own: OTLP/gRPC in, the query API out.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use crate::collector::free_port;
use crate::command::wait_within;
use crate::require;

/// The environment variable naming the Jaeger binary.
pub const ENV: &str = "OBSERVER_JAEGER";
const READY_WITHIN: Duration = Duration::from_secs(60);
const STOP_WITHIN: Duration = Duration::from_secs(15);

/// The Jaeger binary, or `None` after reporting why the test is skipped (a
/// failure under `OBSERVER_E2E_REQUIRED=1`).
pub fn require_jaeger() -> Option<PathBuf> {
    require::require_file_env(ENV, "`cargo xtask setup` builds it and `cargo xtask test` sets it")
}

/// A running Jaeger. Dropping it stops it.
pub struct Jaeger {
    child: Child,
    dir: TempDir,
    otlp_port: u16,
    query_port: u16,
}

/// One trace as Jaeger's query API gives it (`/api/traces`).
#[derive(Debug, Clone)]
pub struct JaegerTrace {
    pub trace_id: String,
    /// Every span's operation name and tags (`key` → value, as JSON).
    pub spans: Vec<(String, serde_json::Map<String, Value>)>,
    /// The process (resource) of the first span: service name and tags.
    pub service: String,
    pub process_tags: serde_json::Map<String, Value>,
}

impl Jaeger {
    pub fn start() -> Jaeger {
        let bin = require_jaeger().expect("jaeger (call require_jaeger first)");
        let dir = tempfile::tempdir().expect("temporary directory for Jaeger");
        let (otlp_port, query_port, grpc_query_port) = (free_port(), free_port(), free_port());
        let config = dir.path().join("jaeger.yaml");
        fs::write(&config, render_config(otlp_port, query_port, grpc_query_port)).expect("writing Jaeger's config");
        let log = fs::File::create(dir.path().join("jaeger.log")).expect("jaeger log");
        let child = Command::new(&bin)
            .arg(format!("--config=file:{}", config.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut jaeger = Jaeger { child, dir, otlp_port, query_port };
        jaeger.wait_until_ready();
        jaeger
    }

    /// Where OTLP/gRPC goes (`host:port`, plaintext).
    pub fn otlp_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.otlp_port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("jaeger.log")).unwrap_or_default()
    }

    /// The traces of `service` that Jaeger has stored, through its query API.
    pub fn traces(&self, service: &str) -> Vec<JaegerTrace> {
        let body = self.get(&format!("/api/traces?service={service}&limit=100&lookback=1h"));
        body["data"].as_array().map(|t| t.iter().map(parse_trace).collect()).unwrap_or_default()
    }

    /// Polls until `service` has at least `at_least` traces (or the bound passes).
    pub fn wait_for_traces(&self, service: &str, at_least: usize, within: Duration) -> Vec<JaegerTrace> {
        let deadline = Instant::now() + crate::bound(within);
        loop {
            let found = self.traces(service);
            if found.len() >= at_least || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn get(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .arg(format!("http://127.0.0.1:{}{path}", self.query_port))
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + crate::bound(READY_WITHIN);
        loop {
            if self.get("/api/services").get("data").is_some() {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("jaeger exited with {exit}; its log:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "jaeger not answering within {READY_WITHIN:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        wait_within(&mut self.child, STOP_WITHIN);
    }
}

/// In-memory storage, OTLP/gRPC in, the query API (HTTP and gRPC) on
/// loopback, no telemetry endpoint of its own (its default port would clash
/// with the gateway collector's).
fn render_config(otlp: u16, query_http: u16, query_grpc: u16) -> String {
    format!(
        "service:\n  extensions: [jaeger_storage, jaeger_query]\n  pipelines:\n    traces:\n      \
         receivers: [otlp]\n      exporters: [jaeger_storage_exporter]\n  telemetry:\n    metrics:\n      \
         level: none\n\
         extensions:\n  jaeger_query:\n    storage:\n      traces: memstore\n    http:\n      \
         endpoint: 127.0.0.1:{query_http}\n    grpc:\n      endpoint: 127.0.0.1:{query_grpc}\n  \
         jaeger_storage:\n    backends:\n      memstore:\n        memory:\n          max_traces: 10000\n\
         receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{otlp}\n\
         exporters:\n  jaeger_storage_exporter:\n    trace_storage: memstore\n"
    )
}

fn tags(list: &Value) -> serde_json::Map<String, Value> {
    list.as_array()
        .map(|tags| tags.iter().filter_map(|t| Some((t["key"].as_str()?.to_owned(), t["value"].clone()))).collect())
        .unwrap_or_default()
}

fn parse_trace(t: &Value) -> JaegerTrace {
    let spans: Vec<(String, serde_json::Map<String, Value>)> = t["spans"]
        .as_array()
        .map(|s| s.iter().map(|s| (s["operationName"].as_str().unwrap_or("").to_owned(), tags(&s["tags"]))).collect())
        .unwrap_or_default();
    let process_id = t["spans"][0]["processID"].as_str().unwrap_or("");
    let process = &t["processes"][process_id];
    JaegerTrace {
        trace_id: t["traceID"].as_str().unwrap_or("").to_owned(),
        spans,
        service: process["serviceName"].as_str().unwrap_or("").to_owned(),
        process_tags: tags(&process["tags"]),
    }
}
