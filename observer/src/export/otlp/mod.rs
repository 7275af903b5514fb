//! OTLP: closed episodes as traces, to a collector (gRPC or HTTP/protobuf)
//! and to `traces.jsonl` (OTLP JSON, one `ExportTraceServiceRequest` a line).
