//! Episode profiles to the collector: a bounded, counted queue and one task
//! that sends from it, over the traces' protocol, headers, compression and
//! TLS (`OtlpConfig`). gRPC: the crate's `ProfilesServiceClient` on our own
//! tonic channel; HTTP: POST to `/v1development/profiles`, where the
//! collector's OTLP receiver (v0.161.0) takes them.
//!
//! The profile writer's thread converts and offers (`ProfileSender::offer`
//! never waits); a full queue drops the newest. A failed send is tried
//! once more after [`RETRY_AFTER`], then counted as failed: a profile is
//! worth less than a trace, and episodes wait behind nothing here.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse, profiles_service_client::ProfilesServiceClient,
};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    config::{NodeResource, OtlpConfig, Protocol},
    profiles::{self, EpisodeLink},
    queue::LastError,
    resource::workload_resource,
    tls,
};
use crate::profile::pprof;

/// Profiles waiting to be sent.
pub const QUEUE: usize = 32;
/// The OTLP/HTTP path of profiles (the signal is still `development`).
pub const HTTP_PATH: &str = "/v1development/profiles";
const RETRY_AFTER: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub struct ProfileExportCounters {
    /// In the queue or being sent now.
    pub queued: AtomicU64,
    pub sent: AtomicU64,
    /// Refused or not delivered after the retry (or rejected by the collector).
    pub failed: AtomicU64,
    /// The queue was full, or still queued at stop.
    pub dropped: AtomicU64,
    pub last_error: LastError,
}

/// What the profile writer holds: converts a profile and queues it.
#[derive(Clone)]
pub struct ProfileSender {
    tx: mpsc::Sender<ExportProfilesServiceRequest>,
    node: Arc<NodeResource>,
    counters: Arc<ProfileExportCounters>,
}

impl ProfileSender {
    /// Queues `profile` as linked by `link`; never waits. `false`: dropped (counted).
    pub fn offer(&self, profile: &pprof::Profile, link: &EpisodeLink) -> bool {
        let resource = workload_resource(&link.workload, &self.node);
        let attributes =
            opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema::from(&resource).attributes.0;
        let request = profiles::request(profile, link, attributes);
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(request) {
            Ok(()) => true,
            Err(_) => {
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// The queue's task and what it counts.
pub struct ProfileExport {
    sender: ProfileSender,
    task: JoinHandle<()>,
    /// `otlp grpc http://c:4317`.
    destination: String,
}

/// How requests go out (the gRPC client boxed: it is the large one).
enum Transport {
    Grpc { client: Box<ProfilesServiceClient<tonic::transport::Channel>>, metadata: tonic::metadata::MetadataMap },
    Http { client: reqwest::Client, url: String, json: bool, gzip: bool, headers: Vec<(String, String)> },
}

/// The profiles endpoint, from the generic `OTEL_EXPORTER_OTLP_ENDPOINT`
/// only: `…_TRACES_ENDPOINT` is for traces. `None`: profiles are not sent.
pub fn endpoint(config: &OtlpConfig) -> Option<String> {
    if config.endpoint_variable != "OTEL_EXPORTER_OTLP_ENDPOINT" {
        return None;
    }
    Some(match config.protocol {
        Protocol::Grpc => config.endpoint.clone(),
        // `config` appended the traces' path to the base URL.
        _ => format!("{}{HTTP_PATH}", config.endpoint.strip_suffix("/v1/traces").unwrap_or(&config.endpoint)),
    })
}

impl ProfileExport {
    /// Starts the task (inside the agent's runtime); `Ok(None)` when the
    /// endpoint is not the generic one (see [`endpoint`]).
    pub fn start(config: &OtlpConfig, node: NodeResource, capacity: usize) -> Result<Option<ProfileExport>, String> {
        tokio::runtime::Handle::try_current().map_err(|_| "profiles export outside the tokio runtime".to_string())?;
        let Some(url) = endpoint(config) else { return Ok(None) };
        let transport = transport(config, &url)?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let counters = Arc::new(ProfileExportCounters::default());
        let task = tokio::spawn(run(rx, transport, Arc::clone(&counters)));
        let sender = ProfileSender { tx, node: Arc::new(node), counters };
        let destination = format!("otlp {} {url}", config.protocol.name());
        Ok(Some(ProfileExport { sender, task, destination }))
    }

    pub fn sender(&self) -> ProfileSender {
        self.sender.clone()
    }

    #[cfg(test)]
    pub fn counters(&self) -> Arc<ProfileExportCounters> {
        Arc::clone(&self.sender.counters)
    }

    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// ` otlp_profiles=2 otlp_profiles_failed=0 otlp_profiles_dropped=0` for
    /// the stop line (and the last error when one failed).
    pub fn stopped_text(&self) -> String {
        let c = &self.sender.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let mut text = format!(
            " otlp_profiles={} otlp_profiles_failed={} otlp_profiles_dropped={}",
            load(&c.sent),
            load(&c.failed),
            load(&c.dropped)
        );
        if load(&c.failed) > 0
            && let Some(e) = c.last_error.get()
        {
            text.push_str(&format!(" otlp_profiles_error={e:?}"));
        }
        text
    }

    /// Sends what is queued for at most `within`; the rest is counted as
    /// dropped. Senders may still be held (the profiler's), so this waits
    /// for the queue to empty rather than for the channel to close. The
    /// counters stay readable (the stop line comes after).
    pub async fn shutdown(&self, within: Duration) {
        let c = &self.sender.counters;
        let start = Instant::now();
        while c.queued.load(Ordering::Relaxed) > 0 && start.elapsed() < within {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.task.abort();
        let left = c.queued.swap(0, Ordering::Relaxed);
        c.dropped.fetch_add(left, Ordering::Relaxed);
    }
}

fn transport(config: &OtlpConfig, url: &str) -> Result<Transport, String> {
    let https = config.is_https();
    match config.protocol {
        Protocol::Grpc => {
            let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
                .map_err(|e| format!("{url}: {e}"))?
                .timeout(config.timeout)
                .connect_timeout(config.timeout);
            if https {
                endpoint = endpoint.tls_config(tls::grpc_tls(&config.tls)).map_err(|e| format!("gRPC TLS: {e}"))?;
            }
            let mut client = ProfilesServiceClient::new(endpoint.connect_lazy());
            if config.gzip {
                client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
            }
            let mut headers = reqwest::header::HeaderMap::new();
            for (name, value) in &config.headers {
                let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
                let value = reqwest::header::HeaderValue::from_str(value).map_err(|e| e.to_string())?;
                headers.append(name, value);
            }
            Ok(Transport::Grpc {
                client: Box::new(client),
                metadata: tonic::metadata::MetadataMap::from_headers(headers),
            })
        }
        Protocol::HttpProtobuf | Protocol::HttpJson => {
            let client = super::queue::http_client(config)?;
            Ok(Transport::Http {
                client,
                url: url.to_string(),
                json: config.protocol == Protocol::HttpJson,
                gzip: config.gzip,
                headers: config.headers.clone(),
            })
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<ExportProfilesServiceRequest>,
    mut transport: Transport,
    counters: Arc<ProfileExportCounters>,
) {
    while let Some(request) = rx.recv().await {
        let mut result = send(&mut transport, &request).await;
        if result.is_err() {
            tokio::time::sleep(RETRY_AFTER).await;
            result = send(&mut transport, &request).await;
        }
        match result {
            Ok(()) => counters.sent.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                counters.last_error.set(e);
                counters.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        counters.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One attempt; a partial success that rejected the profile is an error.
async fn send(transport: &mut Transport, request: &ExportProfilesServiceRequest) -> Result<(), String> {
    let response = match transport {
        Transport::Grpc { client, metadata } => {
            let mut call = tonic::Request::new(request.clone());
            *call.metadata_mut() = metadata.clone();
            client.export(call).await.map_err(|s| format!("gRPC {:?}: {}", s.code(), s.message()))?.into_inner()
        }
        Transport::Http { client, url, json, gzip, headers } => {
            let (body, content_type) = match json {
                true => (profiles::to_json(request).map_err(|e| format!("JSON: {e}"))?, "application/json"),
                false => (prost::Message::encode_to_vec(request), "application/x-protobuf"),
            };
            let mut post = client.post(url.as_str()).header(reqwest::header::CONTENT_TYPE, content_type);
            let body = if *gzip {
                post = post.header(reqwest::header::CONTENT_ENCODING, "gzip");
                gzipped(&body)
            } else {
                body
            };
            for (name, value) in headers.iter() {
                post = post.header(name.as_str(), value.as_str());
            }
            let reply = post.body(body).send().await.map_err(|e| format!("{url}: {e}"))?;
            let status = reply.status();
            let bytes = reply.bytes().await.unwrap_or_default();
            if !status.is_success() {
                return Err(format!(
                    "{url}: HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ));
            }
            // A JSON reply, or an empty one: nothing to read from it.
            match *json {
                true => ExportProfilesServiceResponse::default(),
                false => <ExportProfilesServiceResponse as prost::Message>::decode(bytes.as_ref()).unwrap_or_default(),
            }
        }
    };
    match response.partial_success {
        Some(p) if p.rejected_profiles > 0 => {
            Err(format!("the collector rejected {} profile(s): {}", p.rejected_profiles, p.error_message))
        }
        _ => Ok(()),
    }
}

fn gzipped(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to memory cannot fail.
    let _ = gz.write_all(body);
    gz.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::{config::TlsSettings, queue::tests as q};

    fn config(protocol: Protocol, endpoint: &str, variable: &'static str) -> OtlpConfig {
        OtlpConfig {
            protocol,
            endpoint: endpoint.into(),
            endpoint_variable: variable,
            headers: vec![("x-tenant".into(), "a".into())],
            timeout: Duration::from_secs(5),
            gzip: false,
            tls: TlsSettings::default(),
        }
    }

    #[test]
    fn the_endpoint_is_the_generic_ones_with_the_profiles_path() {
        let generic = "OTEL_EXPORTER_OTLP_ENDPOINT";
        let http = config(Protocol::HttpProtobuf, "http://c:4318/v1/traces", generic);
        assert_eq!(endpoint(&http).as_deref(), Some("http://c:4318/v1development/profiles"));
        let grpc = config(Protocol::Grpc, "http://c:4317", generic);
        assert_eq!(endpoint(&grpc).as_deref(), Some("http://c:4317"));
        let traces_only = config(Protocol::HttpProtobuf, "http://c:4318/x", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        assert_eq!(endpoint(&traces_only), None);
    }

    fn link() -> EpisodeLink {
        EpisodeLink {
            trace_id: [1; 16],
            span_id: [2; 8],
            profile_id: [3; 16],
            workload: Arc::new(crate::workload::Identity { service_name: "checkout".into(), ..Default::default() }),
        }
    }

    /// An HTTP/protobuf export to `base` with a queue of `capacity`.
    fn http_export(base: &str, capacity: usize) -> ProfileExport {
        let config = config(Protocol::HttpProtobuf, &format!("{base}/v1/traces"), "OTEL_EXPORTER_OTLP_ENDPOINT");
        ProfileExport::start(&config, NodeResource::default(), capacity).unwrap().unwrap()
    }

    #[tokio::test]
    async fn http_posts_one_request_per_profile_with_the_headers_and_counts_it() {
        let (base, got, _) = q::receiver(200).await;
        let export = http_export(&base, 4);
        let counters = export.counters();
        assert!(export.sender().offer(&pprof::Profile::default(), &link()));
        export.shutdown(Duration::from_secs(5)).await;
        assert_eq!(counters.sent.load(Ordering::Relaxed), 1, "{:?}", counters.last_error.get());
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, HTTP_PATH);
        assert_eq!(got[0].headers.get("x-tenant").map(String::as_str), Some("a"));
        let request: ExportProfilesServiceRequest = prost::Message::decode(got[0].body.as_slice()).unwrap();
        let service = &request.resource_profiles[0].resource.as_ref().unwrap().attributes;
        assert!(service.iter().any(|kv| kv.key == "service.name"), "{service:?}");
        assert_eq!(request.dictionary.unwrap().link_table[1].trace_id, vec![1; 16]);
    }

    #[tokio::test]
    async fn refused_is_failed_and_a_full_queue_drops() {
        let (base, _, requests) = q::receiver(400).await;
        let export = http_export(&base, 1);
        let counters = export.counters();
        let sender = export.sender();
        let offered = (0..3).filter(|_| sender.offer(&pprof::Profile::default(), &link())).count() as u64;
        export.shutdown(Duration::from_secs(5)).await;
        assert!(requests.load(std::sync::atomic::Ordering::SeqCst) >= 2, "tried again once");
        let (failed, dropped) = (counters.failed.load(Ordering::Relaxed), counters.dropped.load(Ordering::Relaxed));
        assert_eq!(failed + dropped, 3, "failed {failed} dropped {dropped}");
        assert!(offered < 3 && dropped >= 1);
        assert!(counters.last_error.get().is_some_and(|e| e.contains("400")), "{:?}", counters.last_error.get());
    }
}
