//! The embedded default: `<output-dir>/traces.jsonl`, one
//! `ExportTraceServiceRequest` a line in the protobuf JSON mapping that the
//! collector's `otlpjsonfile` receiver reads (hex ids, camelCase names,
//! 64-bit integers as strings). The request is made by opentelemetry-proto's
//! own transform from `SpanData`, the one the exporters use, so the file and
//! the wire carry the same content.

use std::{path::Path, sync::Arc};

use opentelemetry_proto::{
    tonic::collector::trace::v1::ExportTraceServiceRequest,
    transform::{common::tonic::ResourceAttributesWithSchema, trace::tonic::group_spans_by_resource_and_scope},
};
use opentelemetry_sdk::{Resource, trace::SpanData};

use crate::export::disk::{BudgetedFile, Disk};

pub const FILE_NAME: &str = "traces.jsonl";

/// One export call's request, as the exporters build it.
pub fn request(resource: &Resource, spans: Vec<SpanData>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans, &ResourceAttributesWithSchema::from(resource)),
    }
}

/// The request as one line of OTLP JSON (no newline).
pub fn json_line(request: &ExportTraceServiceRequest) -> Result<String, serde_json::Error> {
    serde_json::to_string(request)
}

/// `traces.jsonl`, opened for appending, under the directory's budget.
pub struct TracesFile {
    file: BudgetedFile,
}

impl TracesFile {
    pub fn open(disk: &Arc<Disk>) -> std::io::Result<TracesFile> {
        Ok(TracesFile { file: BudgetedFile::open(disk, FILE_NAME)? })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Appends one episode as one whole line.
    pub fn append(&mut self, resource: &Resource, spans: Vec<SpanData>) -> std::io::Result<()> {
        let mut line = json_line(&request(resource, spans)).map_err(std::io::Error::other)?;
        line.push('\n');
        self.file.append(line.as_bytes()).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::export::otlp::{config::NodeResource, spans::episode_batch, testdata};

    fn line_of_the_fixture() -> Value {
        let node = NodeResource {
            attributes: vec![("k8s.cluster.name".into(), "prod".into())],
            host_name: Some("node-a".into()),
        };
        let (resource, spans) = episode_batch(&testdata::episode_with_every_child(), &node);
        let line = json_line(&request(&resource, spans)).unwrap();
        assert!(!line.contains('\n'));
        serde_json::from_str(&line).unwrap()
    }

    fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a Value> {
        attrs.as_array()?.iter().find(|kv| kv["key"] == key).map(|kv| &kv["value"])
    }

    #[test]
    fn json_is_the_protobuf_json_mapping() {
        let v = line_of_the_fixture();
        let rs = &v["resourceSpans"];
        assert_eq!(rs.as_array().unwrap().len(), 1, "one resource per episode");
        let resource = &rs[0]["resource"]["attributes"];
        assert_eq!(attr(resource, "service.name"), Some(&serde_json::json!({"stringValue": "checkout"})));
        assert_eq!(attr(resource, "host.name"), Some(&serde_json::json!({"stringValue": "node-a"})));
        assert_eq!(attr(resource, "k8s.cluster.name"), Some(&serde_json::json!({"stringValue": "prod"})));
        // int64 as a string.
        assert_eq!(attr(resource, "process.pid"), Some(&serde_json::json!({"intValue": "4242"})));

        let scope = &rs[0]["scopeSpans"][0];
        assert_eq!(scope["scope"]["name"], "observer");
        let spans = scope["spans"].as_array().unwrap();
        let root = &spans[0];
        assert_eq!(root["name"], "memory.pressure");
        assert_eq!(root["traceId"], "abababababababababababababababab");
        assert_eq!(root["spanId"], "0102030405060708");
        assert_eq!(root["parentSpanId"], "");
        assert_eq!(root["startTimeUnixNano"], testdata::T0.to_string());
        assert_eq!(root["endTimeUnixNano"], (testdata::T0 + 10_000).to_string());
        assert_eq!(root["status"]["code"], 2, "ERROR");
        assert_eq!(root["status"]["message"], "OOM kill of pid 4242 (server)");
        assert_eq!(root["links"][0]["traceId"], "cd".repeat(16));
        assert_eq!(root["links"][0]["spanId"], "ee".repeat(8));
        assert_eq!(attr(&root["attributes"], "observer.count.go.gc"), Some(&serde_json::json!({"intValue": "301"})));

        let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "memory.pressure",
                "go.gc",
                "go.assist",
                "memcg.throttle",
                "memcg.reclaim",
                "tcp.reset",
                "memcg.oom_kill",
                "go.gc.folded"
            ]
        );
        for child in &spans[1..] {
            assert_eq!(child["traceId"], root["traceId"]);
            assert_eq!(child["parentSpanId"], "0102030405060708");
        }
        let folded = spans.last().unwrap();
        assert_eq!(attr(&folded["attributes"], "observer.folded.count"), Some(&serde_json::json!({"intValue": "300"})));
    }

    #[test]
    fn the_file_gets_one_line_per_episode_and_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path(), crate::export::disk::DEFAULT_BUDGET);
        let mut file = TracesFile::open(&disk).unwrap();
        assert_eq!(file.path(), dir.path().join("traces.jsonl"));
        let node = NodeResource::default();
        for _ in 0..2 {
            let (resource, spans) = episode_batch(&testdata::episode_with_every_child(), &node);
            file.append(&resource, spans).unwrap();
        }
        // Reopening appends.
        let mut again = TracesFile::open(&Disk::new(dir.path(), crate::export::disk::DEFAULT_BUDGET)).unwrap();
        let (resource, spans) = episode_batch(&testdata::episode_with_every_child(), &node);
        again.append(&resource, spans).unwrap();
        let text = std::fs::read_to_string(dir.path().join("traces.jsonl")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        for line in lines {
            // The protobuf JSON mapping parses back into the request type.
            let request: ExportTraceServiceRequest = serde_json::from_str(line).unwrap();
            assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 8);
            assert_eq!(request.resource_spans[0].scope_spans[0].spans[0].trace_id, testdata::TRACE_ID.to_vec());
        }
    }
}
