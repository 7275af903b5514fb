//! `--listen`: `/metrics` (the [`Published`] exposition), `/healthz` (the
//! agent is alive: its event loop is turning) and `/readyz` (every program
//! attached, the exporters started). HTTP/1 on a task of its own; a slow or
//! hostile client costs one connection task, never the pipeline.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Published;
use crate::kernel::clock::monotonic_ns;

/// Where the endpoints listen unless told: this node only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// The event loop has not turned for this long: not healthy.
const STALLED_AFTER: Duration = Duration::from_secs(10);
/// A connection that sends no complete request within this is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 64;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running endpoints.
pub struct Endpoints {
    pub addr: SocketAddr,
    heartbeat: Arc<AtomicU64>,
}

impl Endpoints {
    /// Binds `addr` at once (a bad or busy address is a start-up error) and
    /// serves on the current tokio runtime.
    pub async fn start(addr: SocketAddr, published: Arc<Published>) -> std::io::Result<Endpoints> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let heartbeat = Arc::new(AtomicU64::new(monotonic_ns()));
        let beat = heartbeat.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else { return };
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of fds, for example: try again shortly.
                        tracing::debug!("accepting a metrics connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (published, beat) = (published.clone(), beat.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let response = respond(&req, &published, &beat);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let mut builder = http1::Builder::new();
                    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    drop(permit);
                });
            }
        });
        Ok(Endpoints { addr, heartbeat })
    }

    /// The event loop turned (called on its tick).
    pub fn beat(&self) {
        self.heartbeat.store(monotonic_ns(), Ordering::Relaxed);
    }
}

fn respond(req: &Request<Incoming>, published: &Arc<Published>, heartbeat: &AtomicU64) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            // Prometheus asks for OpenMetrics; anything else gets the classic text format.
            let openmetrics = req
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains("application/openmetrics-text")));
            let text = published.encode();
            let (body, kind) = match openmetrics {
                true => (text, OPENMETRICS),
                false => (super::prometheus_text(&text), PROMETHEUS_TEXT),
            };
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
            r
        }
        "/healthz" => {
            let idle = Duration::from_nanos(monotonic_ns().saturating_sub(heartbeat.load(Ordering::Relaxed)));
            match idle < STALLED_AFTER {
                true => text(StatusCode::OK, "ok\n".into()),
                false => text(StatusCode::SERVICE_UNAVAILABLE, format!("event loop stalled for {idle:?}\n")),
            }
        }
        "/readyz" => match published.is_ready() {
            true => text(StatusCode::OK, "ready\n".into()),
            false => text(StatusCode::SERVICE_UNAVAILABLE, "attaching\n".into()),
        },
        "/pods" => match published.pods_json() {
            Some(json) => {
                let mut r = Response::new(Full::new(Bytes::from(json)));
                r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
                r
            }
            None => text(StatusCode::NOT_FOUND, "no Kubernetes metadata: --kubernetes is off\n".into()),
        },
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /healthz, /readyz or /pods\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        get_with(addr, path, "").await
    }

    async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let published = Published::new();
        let e = Endpoints::start("127.0.0.1:0".parse().unwrap(), published.clone()).await.expect("bind");
        assert!(get(e.addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        published.set_ready(Vec::new());
        assert!(get(e.addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(e.addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(e.addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200") && metrics.contains("observer_ready 1"), "{metrics}");
        assert!(metrics.contains("text/plain; version=0.0.4") && !metrics.contains("# EOF"), "{metrics}");
        let om = get_with(e.addr, "/metrics", "Accept: application/openmetrics-text;version=1.0.0\r\n").await;
        assert!(om.contains("application/openmetrics-text") && om.ends_with("# EOF\n"), "{om}");
        assert!(get(e.addr, "/nope").await.starts_with("HTTP/1.1 404"));
        assert!(get(e.addr, "/pods").await.starts_with("HTTP/1.1 404"), "no pods without Kubernetes");
        let pods = crate::kube::PodStore::new();
        pods.replace(vec![crate::kube::meta::PodMeta { uid: "u1".into(), name: "web-0".into(), ..Default::default() }]);
        published.set_pods(pods);
        let body = get(e.addr, "/pods").await;
        assert!(body.starts_with("HTTP/1.1 200") && body.contains("application/json"), "{body}");
        let json: serde_json::Value = serde_json::from_str(body.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(json["pods"][0]["uid"], "u1");
        assert_eq!(json["pods"][0]["service_name"], "web-0");
        e.heartbeat.store(0, Ordering::Relaxed);
        assert!(get(e.addr, "/healthz").await.starts_with("HTTP/1.1 503"));
    }

    #[tokio::test]
    async fn a_busy_address_is_an_error() {
        let published = Published::new();
        let e = Endpoints::start("127.0.0.1:0".parse().unwrap(), published.clone()).await.expect("bind");
        let again = Endpoints::start(e.addr, published).await;
        assert!(again.is_err());
    }
}
