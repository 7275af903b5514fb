//! The bounded, counted queue between the agent and the network (or the
//! file), and the one task that exports from it.
//!
//! No `BatchSpanProcessor`: its drops have no counter one can read, and it
//! would mix workloads in one call. Here each episode is one `export` call,
//! after `set_resource` gave the exporter that episode's workload, so one
//! resource per workload needs nothing from the crate beyond what it has.
//!
//! Retries are the exporter's own (opentelemetry-otlp 0.33.1, default
//! `RetryPolicy`): 3 retries after the first attempt, backoff 100 ms doubling
//! to at most 1.6 s plus up to 100 ms jitter, all within the export timeout;
//! gRPC retries UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, ABORTED,
//! OUT_OF_RANGE, DATA_LOSS (RESOURCE_EXHAUSTED only with RetryInfo), HTTP
//! 429/502/503/504 and connection errors, honouring `Retry-After`/RetryInfo
//! (at most 30 s). An episode is `failed` once that gives up.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanExporter as _},
};
use tokio::{
    sync::mpsc::{self, error::TrySendError},
    task::JoinHandle,
};

use super::{
    config::{NodeResource, OtlpConfig, Protocol},
    file::TracesFile,
    spans::episode_batch,
    tls,
};
use crate::correlate::episode::Episode;

/// What the agent's status line and `/metrics` read. Episodes, not spans,
/// except `exported_spans`.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// In the queue or being exported now.
    pub queued: AtomicU64,
    pub exported: AtomicU64,
    pub exported_spans: AtomicU64,
    /// Given up on: the exporter's own retries (within its timeout) and
    /// ours (with backoff, [`RETRY_FOR`] in the agent) all failed.
    pub failed: AtomicU64,
    /// Exports tried again after a failure (the episode stays at the head of the queue meanwhile).
    pub retried: AtomicU64,
    /// Offered while the queue was full (the newest is dropped).
    pub dropped_queue_full: AtomicU64,
    /// Still queued when `shutdown`'s time ran out, or offered after the task stopped.
    pub dropped_stopped: AtomicU64,
    last_error: LastError,
}

/// The latest export error, for the status line (exporters share it).
#[derive(Debug, Default)]
pub struct LastError(Mutex<Option<String>>);

impl LastError {
    pub fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|e| e.clone())
    }

    pub fn set(&self, error: String) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(error);
        }
    }
}

impl ExportCounters {
    pub fn last_error(&self) -> Option<String> {
        self.last_error.get()
    }

    fn set_last_error(&self, error: String) {
        self.last_error.set(error);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full.load(Ordering::Relaxed) + self.dropped_stopped.load(Ordering::Relaxed)
    }
}

/// How long a failed export is tried again (the exporter retries within its
/// timeout by itself; this outlasts a collector that restarts or comes up
/// after the agent). New episodes wait in the bounded queue meanwhile.
pub const RETRY_FOR: Duration = Duration::from_secs(60);
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(8);

/// Where the task sends episodes.
pub enum Backend {
    // Boxed: the exporter is large, the file handle small.
    Otlp(Box<opentelemetry_otlp::SpanExporter>),
    /// Behind a mutex so each append can run on the blocking pool.
    File(Arc<Mutex<TracesFile>>),
}

impl Backend {
    async fn send(&mut self, resource: Resource, spans: Vec<SpanData>) -> Result<(), String> {
        match self {
            Backend::Otlp(exporter) => {
                exporter.set_resource(&resource);
                exporter.export(spans).await.map_err(|e| e.to_string())
            }
            Backend::File(file) => {
                let file = Arc::clone(file);
                // File writes block: off the runtime's thread.
                let write = tokio::task::spawn_blocking(move || match file.lock() {
                    Ok(mut file) => file.append(&resource, spans).map_err(|e| e.to_string()),
                    Err(_) => Err("the traces file's lock is poisoned".to_string()),
                });
                write.await.map_err(|e| format!("file write task: {e}"))?
            }
        }
    }

    fn shutdown(&self) {
        if let Backend::Otlp(exporter) = self {
            // Only drops the client; nothing is buffered in it.
            let _ = exporter.shutdown();
        }
    }
}

/// Builds the crate's exporter from explicit values only (the crate reads
/// the process environment only for what it was not given). Must run inside
/// a tokio runtime: tonic's lazy channel spawns its worker.
pub fn build_exporter(config: &OtlpConfig) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let https = config.is_https();
    let exporter = match config.protocol {
        Protocol::Grpc => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.timeout);
            if config.gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            if !config.headers.is_empty() {
                let mut headers = reqwest::header::HeaderMap::new();
                for (name, value) in &config.headers {
                    let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
                    let value = reqwest::header::HeaderValue::from_str(value).map_err(|e| e.to_string())?;
                    headers.append(name, value);
                }
                builder = builder
                    .with_metadata(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers));
            }
            if https {
                builder = builder.with_tls_config(tls::grpc_tls(&config.tls));
            }
            builder.build()
        }
        Protocol::HttpProtobuf | Protocol::HttpJson => {
            let client = http_client(config)?;
            let protocol = match config.protocol {
                Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
                _ => opentelemetry_otlp::Protocol::HttpBinary,
            };
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_endpoint(config.endpoint.clone())
                .with_protocol(protocol)
                .with_timeout(config.timeout);
            if config.gzip {
                builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            if !config.headers.is_empty() {
                builder = builder.with_headers(config.headers.iter().cloned().collect::<HashMap<_, _>>());
            }
            builder.build()
        }
    };
    exporter.map_err(|e| e.to_string())
}

/// The HTTP client for `config`. Our own: the crate's would get no TLS of
/// ours, and reqwest built without a provider panics unless given one.
pub fn http_client(config: &OtlpConfig) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(config.timeout)
        .tls_backend_preconfigured(tls::http_tls(&config.tls, config.is_https())?)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// The queue and its task.
pub struct OtlpExporter {
    tx: Option<mpsc::Sender<Arc<Episode>>>,
    task: Option<JoinHandle<Backend>>,
    counters: Arc<ExportCounters>,
}

impl OtlpExporter {
    /// Starts the task on the current tokio runtime (panics outside one:
    /// `EpisodeExport::start` checks first). `capacity` 0 counts as 1.
    /// A failed export is tried again with backoff for `retry_for`.
    pub fn start(backend: Backend, node: NodeResource, capacity: usize, retry_for: Duration) -> OtlpExporter {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let counters = Arc::new(ExportCounters::default());
        let task = tokio::spawn(run(rx, backend, node, Arc::clone(&counters), retry_for));
        OtlpExporter { tx: Some(tx), task: Some(task), counters }
    }

    pub fn counters(&self) -> Arc<ExportCounters> {
        Arc::clone(&self.counters)
    }

    /// Queues an episode; never waits. `false`: dropped (and counted).
    pub fn offer(&self, episode: Arc<Episode>) -> bool {
        let c = &self.counters;
        let Some(tx) = &self.tx else {
            c.dropped_stopped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        // Counted before the send, so the task never decrements below zero.
        c.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(episode) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                c.queued.fetch_sub(1, Ordering::Relaxed);
                c.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Closed(_)) => {
                c.queued.fetch_sub(1, Ordering::Relaxed);
                c.dropped_stopped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Closes the queue, lets the task export what is in it for at most
    /// `within`, then stops it; what was left is counted as dropped.
    pub async fn shutdown(mut self, within: Duration) {
        drop(self.tx.take());
        let Some(mut task) = self.task.take() else { return };
        let backend = match tokio::time::timeout(within, &mut task).await {
            Ok(Ok(backend)) => Some(backend),
            Ok(Err(e)) => {
                self.counters.set_last_error(format!("export task: {e}"));
                None
            }
            Err(_) => {
                task.abort();
                // Wait for the abort, so the task no longer touches the counters.
                task.await.ok()
            }
        };
        let left = self.counters.queued.swap(0, Ordering::Relaxed);
        self.counters.dropped_stopped.fetch_add(left, Ordering::Relaxed);
        if let Some(backend) = backend {
            backend.shutdown();
        }
    }
}

impl Drop for OtlpExporter {
    // Dropped without `shutdown` (an error path): stop the task.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Arc<Episode>>,
    mut backend: Backend,
    node: NodeResource,
    counters: Arc<ExportCounters>,
    retry_for: Duration,
) -> Backend {
    while let Some(episode) = rx.recv().await {
        let first = Instant::now();
        let mut backoff = RETRY_FIRST;
        loop {
            let (resource, spans) = episode_batch(&episode, &node);
            let n = spans.len() as u64;
            match backend.send(resource, spans).await {
                Ok(()) => {
                    counters.exported.fetch_add(1, Ordering::Relaxed);
                    counters.exported_spans.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                Err(error) => {
                    counters.set_last_error(error);
                    // A collector that is down (or not up yet) gets the
                    // episode later; a file that cannot be written does not.
                    if matches!(backend, Backend::File(_)) || first.elapsed() + backoff > retry_for {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    counters.retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
        counters.queued.fetch_sub(1, Ordering::Relaxed);
    }
    backend
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{sync::atomic::AtomicUsize, time::Instant};

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::export::otlp::{config::TlsSettings, testdata};

    /// What the tiny receiver got: path, lowercase headers, body.
    #[derive(Debug, Clone)]
    pub struct Received {
        pub path: String,
        pub headers: HashMap<String, String>,
        pub body: Vec<u8>,
    }

    /// A minimal OTLP/HTTP receiver on loopback: answers each request with
    /// `status` (an empty body), or never answers when `status` is 0.
    pub async fn receiver(status: u16) -> (String, Arc<Mutex<Vec<Received>>>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (got2, requests2) = (Arc::clone(&got), Arc::clone(&requests));
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let (got, requests) = (Arc::clone(&got2), Arc::clone(&requests2));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: headers, then Content-Length bytes.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i;
                            }
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                        let mut lines = head.split("\r\n");
                        let path = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_string();
                        let headers: HashMap<String, String> = lines
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                            .collect();
                        let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                        while buf.len() < head_end + 4 + len {
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body = buf[head_end + 4..head_end + 4 + len].to_vec();
                        buf.drain(..head_end + 4 + len);
                        requests.fetch_add(1, Ordering::SeqCst);
                        got.lock().unwrap().push(Received { path, headers, body });
                        if status == 0 {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
                        );
                        if conn.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), got, requests)
    }

    pub fn http_config(base: &str) -> OtlpConfig {
        OtlpConfig {
            protocol: Protocol::HttpProtobuf,
            endpoint: format!("{base}/v1/traces"),
            endpoint_variable: "OTEL_EXPORTER_OTLP_ENDPOINT",
            headers: vec![("x-tenant".into(), "a b".into())],
            timeout: Duration::from_secs(5),
            gzip: false,
            tls: TlsSettings::default(),
        }
    }

    fn episode_of(service: &str, trace: u8) -> Arc<Episode> {
        let mut episode = testdata::episode_with_every_child();
        let mut identity = testdata::identity();
        identity.service_name = service.into();
        episode.workload = Arc::new(identity);
        episode.root.trace_id = [trace; 16];
        Arc::new(episode)
    }

    fn http_queue(config: &OtlpConfig, capacity: usize) -> OtlpExporter {
        let exporter = build_exporter(config).unwrap();
        OtlpExporter::start(Backend::Otlp(Box::new(exporter)), NodeResource::default(), capacity, Duration::ZERO)
    }

    async fn wait_for(what: impl Fn() -> bool) {
        let start = Instant::now();
        while !what() && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn http_protobuf_one_request_per_episode_with_its_workloads_resource() {
        let (base, got, _) = receiver(200).await;
        let exporter = build_exporter(&http_config(&base)).unwrap();
        let queue = OtlpExporter::start(Backend::Otlp(Box::new(exporter)), NodeResource::default(), 16, Duration::ZERO);
        let counters = queue.counters();
        assert!(queue.offer(episode_of("checkout", 1)));
        assert!(queue.offer(episode_of("payments", 2)));
        queue.shutdown(Duration::from_secs(10)).await;
        assert_eq!(counters.exported.load(Ordering::Relaxed), 2, "{:?}", counters.last_error());
        assert_eq!(counters.exported_spans.load(Ordering::Relaxed), 16);
        assert_eq!(counters.queued.load(Ordering::Relaxed), 0);
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        for (received, (service, trace)) in got.iter().zip([("checkout", 1u8), ("payments", 2)]) {
            assert_eq!(received.path, "/v1/traces");
            assert_eq!(received.headers.get("content-type").map(String::as_str), Some("application/x-protobuf"));
            assert_eq!(received.headers.get("x-tenant").map(String::as_str), Some("a b"));
            let request = ExportTraceServiceRequest::decode(received.body.as_slice()).unwrap();
            assert_eq!(request.resource_spans.len(), 1);
            let resource = request.resource_spans[0].resource.as_ref().unwrap();
            let name = resource.attributes.iter().find(|kv| kv.key == "service.name").unwrap();
            assert_eq!(
                format!("{:?}", name.value),
                format!(
                    "{:?}",
                    Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                            service.into()
                        ))
                    })
                )
            );
            let spans = &request.resource_spans[0].scope_spans[0].spans;
            assert_eq!(spans.len(), 8);
            assert!(spans.iter().all(|s| s.trace_id == vec![trace; 16]));
        }
    }

    #[tokio::test]
    async fn http_gzip_and_json() {
        let (base, got, _) = receiver(200).await;
        let mut config = http_config(&base);
        config.gzip = true;
        let queue = http_queue(&config, 4);
        queue.offer(episode_of("a", 1));
        queue.shutdown(Duration::from_secs(10)).await;
        config.gzip = false;
        config.protocol = Protocol::HttpJson;
        let queue = http_queue(&config, 4);
        queue.offer(episode_of("a", 1));
        queue.shutdown(Duration::from_secs(10)).await;
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].headers.get("content-encoding").map(String::as_str), Some("gzip"));
        assert_eq!(got[0].body[..2], [0x1f, 0x8b]);
        assert_eq!(got[1].headers.get("content-type").map(String::as_str), Some("application/json"));
        let json: serde_json::Value = serde_json::from_slice(&got[1].body).unwrap();
        assert_eq!(json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"], "01".repeat(16));
    }

    #[tokio::test]
    async fn retries_three_times_then_counts_a_failure() {
        // The crate's own retry: 503 is retryable; 1 attempt + 3 retries.
        let (base, _, requests) = receiver(503).await;
        let queue = http_queue(&http_config(&base), 4);
        let counters = queue.counters();
        let start = Instant::now();
        queue.offer(episode_of("a", 1));
        queue.shutdown(Duration::from_secs(10)).await;
        assert_eq!(requests.load(Ordering::SeqCst), 4);
        // Backoff 100 + 200 + 400 ms (plus jitter).
        assert!(start.elapsed() >= Duration::from_millis(700), "{:?}", start.elapsed());
        assert_eq!(counters.failed.load(Ordering::Relaxed), 1);
        assert_eq!(counters.exported.load(Ordering::Relaxed), 0);
        assert!(counters.last_error().is_some_and(|e| e.contains("503")), "{:?}", counters.last_error());

        // 400 is not retried.
        let (base, _, requests) = receiver(400).await;
        let queue = http_queue(&http_config(&base), 4);
        queue.offer(episode_of("a", 1));
        queue.shutdown(Duration::from_secs(10)).await;
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn full_queue_drops_the_newest_and_shutdown_is_bounded() {
        // A receiver that never answers: the first episode stays in flight.
        let (base, _, requests) = receiver(0).await;
        let mut config = http_config(&base);
        config.timeout = Duration::from_secs(30);
        let queue = http_queue(&config, 1);
        let counters = queue.counters();
        assert!(queue.offer(episode_of("a", 1)));
        wait_for(|| requests.load(Ordering::SeqCst) == 1).await;
        assert!(queue.offer(episode_of("a", 2)), "fills the queue");
        assert!(!queue.offer(episode_of("a", 3)), "full: dropped");
        assert_eq!(counters.dropped_queue_full.load(Ordering::Relaxed), 1);
        assert_eq!(counters.queued.load(Ordering::Relaxed), 2);
        let start = Instant::now();
        queue.shutdown(Duration::from_millis(200)).await;
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
        assert_eq!(counters.dropped_stopped.load(Ordering::Relaxed), 2, "in flight + queued");
        assert_eq!(counters.queued.load(Ordering::Relaxed), 0);
        assert_eq!(counters.dropped(), 3);
    }

    #[tokio::test]
    async fn grpc_to_nothing_fails_counted_and_tls_material_builds() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config = http_config("unused");
        config.protocol = Protocol::Grpc;
        config.endpoint = format!("http://127.0.0.1:{port}");
        config.timeout = Duration::from_secs(3);
        config.gzip = true;
        let queue = http_queue(&config, 4);
        let counters = queue.counters();
        queue.offer(episode_of("a", 1));
        queue.shutdown(Duration::from_secs(10)).await;
        assert_eq!(counters.failed.load(Ordering::Relaxed), 1);
        assert!(counters.last_error().is_some());

        // tonic takes our CA and client identity (it checks them when the
        // channel is built).
        config.endpoint = format!("https://127.0.0.1:{port}");
        config.tls.ca_pem = Some(testdata::CA_PEM.as_bytes().to_vec());
        config.tls.client_identity = Some(crate::export::otlp::config::ClientIdentity {
            cert_pem: testdata::CLIENT_CERT_PEM.as_bytes().to_vec(),
            key_pem: testdata::CLIENT_KEY_PEM.as_bytes().to_vec(),
        });
        build_exporter(&config).unwrap();
        // tonic skips a CA certificate it cannot parse, silently (hence
        // the check in `config`); our HTTP TLS refuses it.
        config.tls.ca_pem = Some(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec());
        assert!(build_exporter(&config).is_ok());
        config.protocol = Protocol::HttpProtobuf;
        assert!(build_exporter(&config).is_err());
    }

    #[tokio::test]
    async fn file_backend_writes_every_episode() {
        let dir = tempfile::tempdir().unwrap();
        let file =
            TracesFile::open(&crate::export::disk::Disk::new(dir.path(), crate::export::disk::DEFAULT_BUDGET)).unwrap();
        let queue =
            OtlpExporter::start(Backend::File(Arc::new(Mutex::new(file))), NodeResource::default(), 8, Duration::ZERO);
        let counters = queue.counters();
        for i in 0..3 {
            assert!(queue.offer(episode_of("a", i)));
        }
        queue.shutdown(Duration::from_secs(10)).await;
        assert_eq!(counters.exported.load(Ordering::Relaxed), 3);
        let text = std::fs::read_to_string(dir.path().join("traces.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 3);
    }
}
