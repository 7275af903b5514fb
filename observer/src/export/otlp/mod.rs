//! OTLP: closed episodes as traces, to a collector (gRPC, HTTP/protobuf or
//! HTTP/JSON) or, with no endpoint set, to `traces.jsonl` (OTLP JSON, one
//! `ExportTraceServiceRequest` a line).
//!
//! - `config`: the `OTEL_*` variables, read and checked once at start;
//! - `tls`: the TLS the crate would not build for us (CA, client certificate);
//! - `resource`: one resource per observed workload (plus the node's attributes);
//! - `attributes`: every attribute name, and how a record becomes attributes;
//! - `spans`: an episode as `SpanData` (explicit ids and times);
//! - `file`: the OTLP JSON file, through the same transform as the wire;
//! - `queue`: the bounded, counted queue and the task that exports from it;
//! - `sink`: what the agent holds (`EpisodeExport`);
//! - `profiles`: an episode's CPU profile as an OTLP profiles request;
//! - `profile_export`: those requests to the collector (own queue and counters).
//!
//! One resource per workload: each episode is exported by its own `export`
//! call, after `SpanExporter::set_resource` gave the exporter that workload's
//! resource (the crate groups a call's spans under the exporter's resource).

pub mod attributes;
pub mod config;
pub mod file;
pub mod profile_export;
pub mod profiles;
pub mod queue;
pub mod resource;
pub mod sink;
pub mod spans;
pub mod tls;

pub use config::{NodeResource, OtlpConfig, OtlpConfigError};
pub use queue::ExportCounters;
pub use sink::EpisodeExport;

#[cfg(test)]
pub(crate) mod testdata;
