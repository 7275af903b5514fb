//! What the agent holds: closed episodes go to the collector when an
//! endpoint is set, else to `<output-dir>/traces.jsonl`; either way through
//! the bounded queue, and a status line that says how it goes.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::{
    config::{NodeResource, OtlpConfig},
    file::TracesFile,
    queue::{Backend, ExportCounters, OtlpExporter, build_exporter},
};
use crate::correlate::episode::Episode;

#[derive(Debug, thiserror::Error)]
pub enum ExportStartError {
    #[error("the episode export must start inside the agent's tokio runtime")]
    NoRuntime,
    #[error("OTLP exporter for {endpoint} (from {variable}): {error}")]
    Exporter { endpoint: String, variable: &'static str, error: String },
    #[error("cannot open {path}: {error}")]
    File { path: PathBuf, error: std::io::Error },
}

/// The episode export the agent's sinks feed.
pub struct EpisodeExport {
    exporter: OtlpExporter,
    counters: Arc<ExportCounters>,
    /// `otlp grpc http://…` or `traces.jsonl /var/lib/observer/traces.jsonl`.
    label: String,
    /// Where episodes go: `otlp grpc http://…` or the file's path.
    destination: String,
    file: bool,
}

impl EpisodeExport {
    /// With `otlp`, to the collector (no file); without, to
    /// `<output_dir>/traces.jsonl`. Call inside the agent's runtime.
    pub fn start(
        output_dir: &Path,
        otlp: Option<OtlpConfig>,
        node: NodeResource,
        queue_capacity: usize,
    ) -> Result<EpisodeExport, ExportStartError> {
        tokio::runtime::Handle::try_current().map_err(|_| ExportStartError::NoRuntime)?;
        let (backend, destination, file) = match otlp {
            Some(config) => {
                let exporter = build_exporter(&config).map_err(|error| ExportStartError::Exporter {
                    endpoint: redact(&config.endpoint),
                    variable: config.endpoint_variable,
                    error,
                })?;
                (
                    Backend::Otlp(Box::new(exporter)),
                    format!("otlp {} {}", config.protocol.name(), redact(&config.endpoint)),
                    false,
                )
            }
            None => {
                let file = TracesFile::open(output_dir)
                    .map_err(|error| ExportStartError::File { path: output_dir.join(super::file::FILE_NAME), error })?;
                let destination = file.path().display().to_string();
                (Backend::File(Arc::new(Mutex::new(file))), destination, true)
            }
        };
        let label = match file {
            true => format!("{} {destination}", super::file::FILE_NAME),
            false => destination.clone(),
        };
        let exporter = OtlpExporter::start(backend, node, queue_capacity);
        let counters = exporter.counters();
        Ok(EpisodeExport { exporter, counters, label, destination, file })
    }

    /// Where episodes go, for the agent's ready line: `otlp grpc https://c:4317`
    /// or `/var/lib/observer/traces.jsonl`.
    pub fn describe(&self) -> String {
        self.destination.clone()
    }

    /// Queues a closed episode; never waits. `false`: dropped (counted).
    pub fn offer(&self, episode: Arc<Episode>) -> bool {
        self.exporter.offer(episode)
    }

    pub fn counters(&self) -> Arc<ExportCounters> {
        Arc::clone(&self.counters)
    }

    /// One line for the status: `otlp grpc http://c:4317: exported 3 (41 spans), failed 0, dropped 0, queued 0`.
    pub fn status_text(&self) -> String {
        let c = &self.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let mut text = format!(
            "{}: {} {} ({} spans), failed {}, dropped {}, queued {}",
            self.label,
            if self.file { "written" } else { "exported" },
            load(&c.exported),
            load(&c.exported_spans),
            load(&c.failed),
            c.dropped(),
            load(&c.queued),
        );
        if load(&c.failed) > 0
            && let Some(error) = c.last_error()
        {
            text.push_str(&format!("; last error: {error}"));
        }
        text
    }

    /// Exports what is queued for at most `within`; the rest is counted as dropped.
    pub async fn shutdown(self, within: Duration) {
        self.exporter.shutdown(within).await;
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
    use crate::export::otlp::{queue::tests as q, testdata};

    #[tokio::test]
    async fn without_an_endpoint_episodes_go_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let export = EpisodeExport::start(dir.path(), None, NodeResource::default(), 8).unwrap();
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
        let export = EpisodeExport::start(dir.path(), Some(q::http_config(&base)), NodeResource::default(), 8).unwrap();
        export.offer(Arc::new(testdata::episode_with_every_child()));
        let counters = export.counters();
        let start = std::time::Instant::now();
        while counters.exported.load(Ordering::Relaxed) == 0 && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(export.describe(), format!("otlp http/protobuf {base}/v1/traces"));
        assert_eq!(
            export.status_text(),
            format!("otlp http/protobuf {base}/v1/traces: exported 1 (8 spans), failed 0, dropped 0, queued 0")
        );
        export.shutdown(Duration::from_secs(5)).await;
        assert_eq!(got.lock().unwrap().len(), 1);
        assert!(!dir.path().join("traces.jsonl").exists(), "no file when a collector is set");
    }

    #[tokio::test]
    async fn failures_show_the_last_error() {
        let (base, _, _) = q::receiver(400).await;
        let dir = tempfile::tempdir().unwrap();
        let export = EpisodeExport::start(dir.path(), Some(q::http_config(&base)), NodeResource::default(), 8).unwrap();
        export.offer(Arc::new(testdata::episode_with_every_child()));
        let counters = export.counters();
        let start = std::time::Instant::now();
        while counters.failed.load(Ordering::Relaxed) == 0 && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = export.status_text();
        assert!(status.contains("exported 0 (0 spans), failed 1, dropped 0, queued 0; last error: "), "{status}");
        assert!(status.contains("400"), "{status}");
        export.shutdown(Duration::from_secs(5)).await;
    }

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = EpisodeExport::start(dir.path(), None, NodeResource::default(), 8).err().unwrap();
        assert!(matches!(err, ExportStartError::NoRuntime));
    }

    #[tokio::test]
    async fn unwritable_output_dir_names_the_file() {
        let err = EpisodeExport::start(Path::new("/nonexistent/dir"), None, NodeResource::default(), 8).err().unwrap();
        assert!(err.to_string().contains("/nonexistent/dir/traces.jsonl"), "{err}");
    }

    #[test]
    fn credentials_never_reach_the_status_line() {
        assert_eq!(redact("https://user:pw@c:4318/v1/traces"), "https://c:4318/v1/traces");
        assert_eq!(redact("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }
}
