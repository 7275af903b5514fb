//! The collector harness itself (`observer_e2e::collector`), without the
//! agent: one tiny OTLP/HTTP JSON request sent with `curl` to each receiver
//! kind curl can speak (HTTP, HTTP with TLS, mutual TLS) comes out of the
//! file exporter's file; every receiver kind, gRPC ones included, starts and
//! listens (TLS ones with the test CA's certificate, checked with `openssl
//! s_client`); a restart keeps the port and what was written.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use observer_e2e::collector::{Collector, Receiver, Security, Transport, require_otelcol};
use observer_e2e::command::output_within;
use observer_e2e::otlp::{StatusCode, traces};
use rstest::rstest;

const ARRIVE_WITHIN: Duration = Duration::from_secs(10);

/// A request with one span, its trace id made from `tag` (32 hex digits).
fn request(tag: u32) -> (String, String) {
    let trace_id = format!("{:024x}{tag:08x}", 0xfeed_u64);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "harness"}}]},
        "scopeSpans": [{"scope": {"name": "selftest"}, "spans": [{
            "traceId": trace_id, "spanId": "00000000000000aa", "name": "harness.span", "kind": 1,
            "startTimeUnixNano": (now - 1_000_000).to_string(), "endTimeUnixNano": now.to_string(),
            "attributes": [{"key": "n", "value": {"intValue": tag.to_string()}}],
            "status": {"code": 2, "message": "on purpose"}
        }]}]
    }]});
    (trace_id, body.to_string())
}

/// `curl` POSTing `body` to the collector's `/v1/traces`, with the CA (and
/// the client certificate when `client_cert`) for TLS receivers. Returns
/// (exit success, stdout+stderr).
fn curl(collector: &Collector, body: &str, client_cert: bool) -> (bool, String) {
    let url = format!("{}/v1/traces", collector.endpoint());
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail", "--max-time", "10", "-X", "POST", "-H", "Content-Type: application/json"])
        .args(["--data-binary", body]);
    if let Some(pki) = collector.pki() {
        cmd.arg("--cacert").arg(pki.ca_cert());
        if client_cert {
            cmd.arg("--cert").arg(pki.client_cert()).arg("--key").arg(pki.client_key());
        }
    }
    cmd.arg(&url);
    let out = output_within(&mut cmd, Duration::from_secs(20));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), format!("{url}: {} {text}", out.status))
}

fn assert_arrives(collector: &Collector, trace_id: &str, tag: u32) {
    let requests = collector.wait_for_traces(ARRIVE_WITHIN, |r| traces(r).iter().any(|t| t.trace_id == trace_id));
    let all = traces(&requests);
    let trace = all.iter().find(|t| t.trace_id == trace_id).unwrap_or_else(|| {
        panic!(
            "trace {trace_id} not in {} within {ARRIVE_WITHIN:?}: {} requests, {} traces; stderr:\n{}",
            collector.traces_path().display(),
            requests.len(),
            all.len(),
            collector.stderr()
        )
    });
    assert_eq!(trace.resource.str("service.name"), Some("harness"), "{}", trace.summary());
    let root = trace.root();
    assert_eq!(root.name, "harness.span");
    assert_eq!(root.scope, "selftest");
    assert_eq!(root.attributes.u64("n"), Some(u64::from(tag)), "int attribute read back: {:?}", root.attributes);
    assert_eq!(root.status.code, StatusCode::Error);
    assert!(root.end_unix_nano > root.start_unix_nano, "{root:?}");
}

#[rstest]
#[case::http(Receiver::HTTP)]
#[case::http_tls(Receiver::HTTP_TLS)]
#[case::http_mtls(Receiver::HTTP_MTLS)]
fn a_span_sent_with_curl_comes_out_of_the_file(#[case] receiver: Receiver) {
    if require_otelcol().is_none() {
        return;
    }
    let collector = Collector::start(receiver);
    let (trace_id, body) = request(1);
    if receiver.security == Security::Mutual {
        let (ok, said) = curl(&collector, &body, false);
        assert!(!ok, "mutual TLS accepted a client without a certificate: {said}");
    }
    let (ok, said) = curl(&collector, &body, true);
    assert!(ok, "curl failed: {said}; collector stderr:\n{}", collector.stderr());
    assert!(said.contains("partialSuccess"), "{said}");
    assert_arrives(&collector, &trace_id, 1);
}

/// Every kind starts and listens on its port; a TLS one presents a
/// certificate that verifies against the test CA for `localhost`.
#[rstest]
fn every_receiver_kind_starts(
    #[values(
        Receiver::GRPC,
        Receiver::HTTP,
        Receiver::GRPC_TLS,
        Receiver::HTTP_TLS,
        Receiver::GRPC_MTLS,
        Receiver::HTTP_MTLS
    )]
    receiver: Receiver,
) {
    if require_otelcol().is_none() {
        return;
    }
    let mut collector = Collector::start(receiver);
    assert!(collector.is_running(), "{}", collector.stderr());
    let endpoint = collector.endpoint();
    let scheme = if receiver.security == Security::Plain { "http://127.0.0.1:" } else { "https://localhost:" };
    assert_eq!(endpoint, format!("{scheme}{}", collector.port()));
    let env = collector.otlp_env();
    let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_string_lossy().into_owned());
    assert_eq!(var("OTEL_EXPORTER_OTLP_ENDPOINT"), Some(endpoint));
    let protocol = if receiver.transport == Transport::Grpc { "grpc" } else { "http/protobuf" };
    assert_eq!(var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref(), Some(protocol));
    assert_eq!(var("OTEL_EXPORTER_OTLP_CLIENT_KEY").is_some(), receiver.security == Security::Mutual);
    if let Some(pki) = collector.pki() {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-brief", "-verify_return_error", "-verify_hostname", "localhost"])
            .arg("-connect")
            .arg(format!("127.0.0.1:{}", collector.port()))
            .arg("-CAfile")
            .arg(pki.ca_cert());
        if receiver.security == Security::Mutual {
            cmd.arg("-cert").arg(pki.client_cert()).arg("-key").arg(pki.client_key());
        }
        let out = output_within(&mut cmd, Duration::from_secs(20));
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("Verification: OK"), "openssl s_client ({}): {text}", out.status);
    }
    let status = collector.stop().expect("it was running");
    assert!(status.success(), "collector exit after SIGTERM: {status}; stderr:\n{}", collector.stderr());
}

/// Killed and restarted on the same port: what the first run wrote stays,
/// what is sent after the restart arrives too.
#[test]
fn restart_keeps_the_port_and_the_file() {
    if require_otelcol().is_none() {
        return;
    }
    let mut collector = Collector::start(Receiver::HTTP);
    let port = collector.port();
    let (first, body) = request(10);
    let (ok, said) = curl(&collector, &body, false);
    assert!(ok, "{said}");
    assert_arrives(&collector, &first, 10);
    collector.kill();
    assert!(!collector.is_running());
    let (ok, said) = curl(&collector, &request(11).1, false);
    assert!(!ok, "a killed collector still answered: {said}");
    collector.restart();
    assert_eq!(collector.port(), port);
    let (second, body) = request(12);
    let (ok, said) = curl(&collector, &body, false);
    assert!(ok, "{said}; stderr:\n{}", collector.stderr());
    assert_arrives(&collector, &second, 12);
    assert_arrives(&collector, &first, 10);
    collector.restart();
    assert!(collector.is_running());
}
