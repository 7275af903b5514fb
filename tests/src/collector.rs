//! A real OpenTelemetry Collector (`OBSERVER_OTELCOL`, built by `cargo xtask
//! setup` from `tests/collector/builder.yaml`) that a test exports to and
//! whose file exporter output it reads back.
//!
//! Each [`Collector`] gets its own temporary directory (config, output files,
//! TLS material) and a free loopback port. Its config: one `otlp` receiver
//! (gRPC or HTTP, plain, TLS or mutual TLS); a `traces` pipeline through the
//! batch processor to a `file` exporter (`format: json`, appending, flushed
//! every 100 ms); a `profiles` pipeline (`--feature-gates=+service.profilesSupport`)
//! to another file exporter, without the batch processor, which does not
//! support profiles; no telemetry listener of its own (so collectors run side
//! by side).

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

use crate::command::wait_within;
use crate::otlp::read_json_lines;
use crate::require;
use crate::tls::TestPki;

/// The environment variable naming the collector binary.
pub const ENV: &str = "OBSERVER_OTELCOL";
const READY_WITHIN: Duration = Duration::from_secs(30);
const STOP_WITHIN: Duration = Duration::from_secs(15);
const TRACES_FILE: &str = "traces.json";
const PROFILES_FILE: &str = "profiles.json";
const FEATURE_GATES: &str = "--feature-gates=+service.profilesSupport";

/// The collector binary, or `None` after reporting why the test is skipped
/// (a failure under `OBSERVER_E2E_REQUIRED=1`).
pub fn require_otelcol() -> Option<PathBuf> {
    require::require_file_env(ENV, "`cargo xtask setup` builds the collector and `cargo xtask test` sets it")
}

/// How the receiver is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`).
    Grpc,
    /// OTLP/HTTP (`http/protobuf`, or JSON with `Content-Type: application/json`).
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plain,
    /// A server certificate for `localhost` signed by the test's CA.
    Tls,
    /// Server TLS, and the client must present a certificate signed by the test's CA.
    Mutual,
}

/// A receiver kind: transport and security.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receiver {
    pub transport: Transport,
    pub security: Security,
}

impl Receiver {
    pub const GRPC: Receiver = Receiver { transport: Transport::Grpc, security: Security::Plain };
    pub const HTTP: Receiver = Receiver { transport: Transport::Http, security: Security::Plain };
    pub const GRPC_TLS: Receiver = Receiver { transport: Transport::Grpc, security: Security::Tls };
    pub const HTTP_TLS: Receiver = Receiver { transport: Transport::Http, security: Security::Tls };
    pub const GRPC_MTLS: Receiver = Receiver { transport: Transport::Grpc, security: Security::Mutual };
    pub const HTTP_MTLS: Receiver = Receiver { transport: Transport::Http, security: Security::Mutual };

    /// `OTEL_EXPORTER_OTLP_PROTOCOL` for this receiver.
    pub fn protocol(self) -> &'static str {
        match self.transport {
            Transport::Grpc => "grpc",
            Transport::Http => "http/protobuf",
        }
    }

    fn tls(self) -> bool {
        self.security != Security::Plain
    }
}

/// A running (or stopped, restartable) collector. Dropping it kills it.
pub struct Collector {
    bin: PathBuf,
    receiver: Receiver,
    port: u16,
    dir: TempDir,
    pki: Option<TestPki>,
    child: Option<Child>,
    /// Every stderr line of every run of the collector, in order.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    /// Starts the collector from `OBSERVER_OTELCOL` (call [`require_otelcol`]
    /// first) on a free loopback port and waits until its receiver accepts
    /// connections.
    pub fn start(receiver: Receiver) -> Collector {
        let mut collector = Collector::configured(receiver);
        collector.spawn();
        collector
    }

    /// Configured on a free port, TLS material made, but not started: for a
    /// test that starts the agent first ([`Collector::restart`] starts it).
    pub fn configured(receiver: Receiver) -> Collector {
        let bin = std::env::var_os(ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{ENV} is not set: call collector::require_otelcol() first"));
        let dir = tempfile::tempdir().expect("temporary directory for the collector");
        let pki = receiver.tls().then(TestPki::create);
        let port = free_port();
        let collector =
            Collector { bin, receiver, port, dir, pki, child: None, stderr: Arc::new(Mutex::new(Vec::new())) };
        std::fs::write(collector.config_path(), collector.config())
            .unwrap_or_else(|e| panic!("writing {}: {e}", collector.config_path().display()));
        collector
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// The file the traces pipeline writes (OTLP JSON, one request per line).
    pub fn traces_path(&self) -> PathBuf {
        self.dir.path().join(TRACES_FILE)
    }

    pub fn profiles_path(&self) -> PathBuf {
        self.dir.path().join(PROFILES_FILE)
    }

    /// The collector's YAML config.
    pub fn config(&self) -> String {
        render_config(self.receiver, self.port, self.dir.path(), self.pki.as_ref())
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "collector already running");
        let mut child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.config_path())
            .arg(FEATURE_GATES)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.bin.display()));
        let pipe = child.stderr.take().expect("piped stderr");
        let lines = Arc::clone(&self.stderr);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        self.child = Some(child);
        self.wait_ready();
    }

    /// Until the receiver's port accepts a connection, or panics with the
    /// collector's stderr when it exits first or takes too long.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + crate::bound(READY_WITHIN);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            let child = self.child.as_mut().expect("started");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                thread::sleep(Duration::from_millis(100)); // the rest of its stderr
                panic!(
                    "collector exited ({status}) before its receiver listened on {addr}; stderr:\n{}",
                    self.stderr()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                let _ = wait_within(child, Duration::ZERO);
                self.child = None;
                panic!(
                    "collector's receiver not listening on {addr} within {:?}; stderr:\n{}",
                    crate::bound(READY_WITHIN),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn receiver(&self) -> Receiver {
        self.receiver
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its pid while it runs (to SIGSTOP it: a collector that hangs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` with TLS (the
    /// server certificate's name). For OTLP/HTTP the signal paths
    /// (`/v1/traces`) go after it.
    pub fn endpoint(&self) -> String {
        if self.receiver.tls() {
            format!("https://localhost:{}", self.port)
        } else {
            format!("http://127.0.0.1:{}", self.port)
        }
    }

    /// The test's TLS material (with TLS receivers only).
    pub fn pki(&self) -> Option<&TestPki> {
        self.pki.as_ref()
    }

    /// The `OTEL_EXPORTER_OTLP_*` variables an exporter needs to reach this
    /// collector: endpoint, protocol, and with TLS the CA (and for mutual TLS
    /// the client key and certificate).
    pub fn otlp_env(&self) -> Vec<(String, OsString)> {
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), OsString::from(self.endpoint())),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".to_string(), OsString::from(self.receiver.protocol())),
        ];
        if let Some(pki) = &self.pki {
            env.push(("OTEL_EXPORTER_OTLP_CERTIFICATE".into(), pki.ca_cert().into_os_string()));
            if self.receiver.security == Security::Mutual {
                env.push(("OTEL_EXPORTER_OTLP_CLIENT_KEY".into(), pki.client_key().into_os_string()));
                env.push(("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE".into(), pki.client_cert().into_os_string()));
            }
        }
        env
    }

    /// SIGTERM (a clean shutdown: the file exporter flushes) and waits; a
    /// collector that does not exit in time is killed. No-op when stopped.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let status = wait_within(&mut child, STOP_WITHIN);
        if status.is_none() {
            panic!(
                "collector still running {:?} after SIGTERM; killed it. stderr:\n{}",
                crate::bound(STOP_WITHIN),
                self.stderr()
            );
        }
        status
    }

    /// SIGKILL: the collector dies at once, as in a crash (what its file
    /// exporter had not flushed is lost). No-op when stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it if it runs, then starts it again on the same port with the
    /// same config; its files keep what earlier runs wrote.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Every trace request the file exporter wrote so far (all runs), a partly
    /// written last line left out.
    pub fn traces(&self) -> Vec<Value> {
        read_json_lines(&self.traces_path())
    }

    /// Every profiles request written so far.
    pub fn profiles(&self) -> Vec<Value> {
        read_json_lines(&self.profiles_path())
    }

    /// Polls [`Collector::traces`] until `done` says so or `within` passes;
    /// returns the last requests read either way (the caller asserts).
    pub fn wait_for_traces(&self, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let requests = self.traces();
            if done(&requests) || Instant::now() >= deadline {
                return requests;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The collector's stderr so far, all runs.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The config of a collector whose files live in `dir`.
fn render_config(receiver: Receiver, port: u16, dir: &Path, pki: Option<&TestPki>) -> String {
    let protocol = match receiver.transport {
        Transport::Grpc => "grpc",
        Transport::Http => "http",
    };
    let mut tls = String::new();
    if let Some(pki) = pki {
        tls = format!(
            "        tls:\n          cert_file: {}\n          key_file: {}\n",
            pki.server_cert().display(),
            pki.server_key().display()
        );
        if receiver.security == Security::Mutual {
            tls += &format!("          client_ca_file: {}\n", pki.ca_cert().display());
        }
    }
    let file = |name: &str| {
        format!(
            "    path: {}\n    format: json\n    append: true\n    flush_interval: 100ms\n",
            dir.join(name).display()
        )
    };
    format!(
        "receivers:\n  otlp:\n    protocols:\n      {protocol}:\n        endpoint: 127.0.0.1:{port}\n{tls}\
         processors:\n  batch:\n    timeout: 100ms\n\
         exporters:\n  file/traces:\n{traces}  file/profiles:\n{profiles}\
         service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n\
         \x20   traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [file/traces]\n\
         \x20   profiles:\n      receivers: [otlp]\n      exporters: [file/profiles]\n",
        traces = file(TRACES_FILE),
        profiles = file(PROFILES_FILE),
    )
}

/// A loopback port nobody listens on right now (the kernel's pick).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_pipeline_has_no_batch_processor() {
        // The batch processor does not support profiles: the collector
        // refuses such a config ("telemetry type is not supported").
        let config = render_config(Receiver::HTTP, 4318, Path::new("/tmp/x"), None);
        let profiles = config.split("    profiles:\n").nth(1).expect("a profiles pipeline");
        assert!(!profiles.contains("batch"), "{config}");
        assert!(config.contains("      processors: [batch]\n      exporters: [file/traces]"), "{config}");
        assert!(config.contains("      http:\n        endpoint: 127.0.0.1:4318\n"), "{config}");
        assert!(config.contains("    path: /tmp/x/traces.json\n    format: json\n"), "{config}");
        assert!(!config.contains("tls:"), "{config}");
    }
}
