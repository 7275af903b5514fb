//! What the agent holds: closed episodes go to `<output-dir>/traces.jsonl`,
//! and to the collector too when an endpoint is set; each through its own
//! bounded queue, and a status line that says how it goes.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::{
    config::{NodeResource, OtlpConfig},
    file::TracesFile,
    queue::{Backend, ExportCounters, OtlpExporter, RETRY_FOR, build_exporter},
};
use crate::{correlate::episode::Episode, export::disk::Disk};

#[derive(Debug, thiserror::Error)]
pub enum ExportStartError {
    #[error("the episode export must start inside the agent's tokio runtime")]
    NoRuntime,
    #[error("OTLP exporter for {endpoint} (from {variable}): {error}")]
    Exporter { endpoint: String, variable: &'static str, error: String },
    #[error("cannot open {path}: {error}")]
    File { path: PathBuf, error: std::io::Error },
}

/// The episode export the agent's sinks feed: every episode goes to
/// `traces.jsonl` (what `observer episodes` and a person on the node read),
/// and to the collector too when an endpoint is set; each through its own
/// bounded queue.
pub struct EpisodeExport {
    file: Channel,
    otlp: Option<Channel>,
}

/// One exporter with its queue, counters and name.
struct Channel {
    exporter: OtlpExporter,
    counters: Arc<ExportCounters>,
    /// `otlp grpc http://…` or the file's path.
    destination: String,
    file: bool,
}

impl Channel {
    fn start(backend: Backend, destination: String, file: bool, node: NodeResource, capacity: usize) -> Self {
        let exporter = OtlpExporter::start(backend, node, capacity, RETRY_FOR);
        let counters = exporter.counters();
        Channel { exporter, counters, destination, file }
    }

    /// `otlp grpc http://c:4317: exported 3 (41 spans), failed 0, dropped 0, queued 0`.
    fn status_text(&self) -> String {
        let c = &self.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let label = match self.file {
            true => format!("{} {}", super::file::FILE_NAME, self.destination),
            false => self.destination.clone(),
        };
        let mut text = format!(
            "{label}: {} {} ({} spans), failed {}, dropped {}, queued {}",
            if self.file { "written" } else { "exported" },
            load(&c.exported),
            load(&c.exported_spans),
            load(&c.failed),
            c.dropped(),
            load(&c.queued),
        );
        if load(&c.retried) > 0 {
            text.push_str(&format!(", retried {}", load(&c.retried)));
        }
        if (load(&c.failed) > 0 || load(&c.retried) > 0)
            && let Some(error) = c.last_error()
        {
            text.push_str(&format!("; last error: {error}"));
        }
        text
    }
}

impl EpisodeExport {
    /// To `traces.jsonl` in the disk's directory, and with `otlp` to the
    /// collector too. Call inside the agent's runtime.
    pub fn start(
        disk: &Arc<Disk>,
        otlp: Option<OtlpConfig>,
        node: NodeResource,
        queue_capacity: usize,
    ) -> Result<EpisodeExport, ExportStartError> {
        tokio::runtime::Handle::try_current().map_err(|_| ExportStartError::NoRuntime)?;
        let otlp = match otlp {
            Some(config) => {
                let exporter = build_exporter(&config).map_err(|error| ExportStartError::Exporter {
                    endpoint: redact(&config.endpoint),
                    variable: config.endpoint_variable,
                    error,
                })?;
                let destination = format!("otlp {} {}", config.protocol.name(), redact(&config.endpoint));
                Some((Backend::Otlp(Box::new(exporter)), destination))
            }
            None => None,
        };
        let file = TracesFile::open(disk)
            .map_err(|error| ExportStartError::File { path: disk.dir().join(super::file::FILE_NAME), error })?;
        let destination = file.path().display().to_string();
        let file =
            Channel::start(Backend::File(Arc::new(Mutex::new(file))), destination, true, node.clone(), queue_capacity);
        let otlp = otlp.map(|(backend, destination)| Channel::start(backend, destination, false, node, queue_capacity));
        Ok(EpisodeExport { file, otlp })
    }

    /// Where episodes go, for the agent's ready line:
    /// `/var/lib/observer/traces.jsonl and otlp grpc https://c:4317`.
    pub fn describe(&self) -> String {
        match &self.otlp {
            Some(otlp) => format!("{} and {}", self.file.destination, otlp.destination),
            None => self.file.destination.clone(),
        }
    }

    /// Queues a closed episode for every exporter; never waits. `false`:
    /// dropped by one of them (counted there).
    pub fn offer(&self, episode: Arc<Episode>) -> bool {
        let to_file = self.file.exporter.offer(Arc::clone(&episode));
        self.otlp.as_ref().is_none_or(|o| o.exporter.offer(episode)) && to_file
    }

    /// The counters of the collector's exporter when there is one, else the file's.
    pub fn counters(&self) -> Arc<ExportCounters> {
        Arc::clone(&self.otlp.as_ref().unwrap_or(&self.file).counters)
    }

    /// One part per exporter for the status line, `; `-separated.
    pub fn status_text(&self) -> String {
        let mut text = self.file.status_text();
        if let Some(otlp) = &self.otlp {
            text.push_str("; ");
            text.push_str(&otlp.status_text());
        }
        text
    }

    /// Exports what is queued for at most `within` (both exporters at once);
    /// the rest is counted as dropped.
    pub async fn shutdown(self, within: Duration) {
        let file = self.file.exporter.shutdown(within);
        match self.otlp {
            Some(otlp) => {
                tokio::join!(file, otlp.exporter.shutdown(within));
            }
            None => file.await,
        }
    }
}

/// An endpoint without its user and password (the status line is printed).
fn redact(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        _ => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{
        disk::DEFAULT_BUDGET,
        otlp::{queue::tests as q, testdata},
    };

    #[tokio::test]
    async fn without_an_endpoint_episodes_go_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let export =
            EpisodeExport::start(&Disk::new(dir.path(), DEFAULT_BUDGET), None, NodeResource::default(), 8).unwrap();
        assert!(export.offer(Arc::new(testdata::episode_with_every_child())));
        let counters = export.counters();
        let start = std::time::Instant::now();
        while counters.exported.load(Ordering::Relaxed) == 0 && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let path = dir.path().join("traces.jsonl");
        assert_eq!(export.describe(), path.display().to_string());
        assert_eq!(
            export.status_text(),
            format!("traces.jsonl {}: written 1 (8 spans), failed 0, dropped 0, queued 0", path.display())
        );
        export.shutdown(Duration::from_secs(5)).await;
        assert_eq!(std::fs::read_to_string(path).unwrap().lines().count(), 1);
    }

    #[tokio::test]
    async fn with_an_endpoint_to_the_collector_and_the_status_says_so() {
        let (base, got, _) = q::receiver(200).await;
        let dir = tempfile::tempdir().unwrap();
        let export = EpisodeExport::start(
            &Disk::new(dir.path(), DEFAULT_BUDGET),
            Some(q::http_config(&base)),
            NodeResource::default(),
            8,
        )
        .unwrap();
        export.offer(Arc::new(testdata::episode_with_every_child()));
        let counters = export.counters();
        let start = std::time::Instant::now();
        while counters.exported.load(Ordering::Relaxed) == 0 && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let file = dir.path().join("traces.jsonl");
        assert_eq!(export.describe(), format!("{} and otlp http/protobuf {base}/v1/traces", file.display()));
        let status = export.status_text();
        assert!(
            status.ends_with(&format!(
                "; otlp http/protobuf {base}/v1/traces: exported 1 (8 spans), failed 0, dropped 0, queued 0"
            )),
            "{status}"
        );
        export.shutdown(Duration::from_secs(5)).await;
        assert_eq!(got.lock().unwrap().len(), 1);
        let lines = std::fs::read_to_string(dir.path().join("traces.jsonl")).unwrap_or_default().lines().count();
        assert_eq!(lines, 1, "the file gets every episode when a collector is set too");
    }

    #[tokio::test]
    async fn failures_show_the_last_error() {
        let (base, _, _) = q::receiver(400).await;
        let dir = tempfile::tempdir().unwrap();
        let export = EpisodeExport::start(
            &Disk::new(dir.path(), DEFAULT_BUDGET),
            Some(q::http_config(&base)),
            NodeResource::default(),
            8,
        )
        .unwrap();
        export.offer(Arc::new(testdata::episode_with_every_child()));
        let counters = export.counters();
        let start = std::time::Instant::now();
        while counters.retried.load(Ordering::Relaxed) == 0 && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The collector said no: the episode waits at the head of the queue and is tried again.
        let status = export.status_text();
        assert!(
            status.contains("exported 0 (0 spans), failed 0, dropped 0, queued 1, retried 1; last error: "),
            "{status}"
        );
        assert!(status.contains("400"), "{status}");
        export.shutdown(Duration::from_millis(100)).await;
        assert_eq!(counters.dropped(), 1, "still queued at stop: counted as dropped");
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = EpisodeExport::start(&Disk::new(dir.path(), DEFAULT_BUDGET), None, NodeResource::default(), 8)
            .err()
            .unwrap();
        assert!(matches!(err, ExportStartError::NoRuntime));
    }

    #[tokio::test]
    async fn unwritable_output_dir_names_the_file() {
        let err = EpisodeExport::start(
            &Disk::new(std::path::Path::new("/nonexistent/dir"), DEFAULT_BUDGET),
            None,
            NodeResource::default(),
            8,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/dir/traces.jsonl"), "{err}");
    }

    #[test]
    fn credentials_never_reach_the_status_line() {
        assert_eq!(redact("https://user:pw@c:4318/v1/traces"), "https://c:4318/v1/traces");
        assert_eq!(redact("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }
}
