//! Where records and episodes go: JSON lines on disk, the live view on the
//! terminal, OTLP (a collector, and the OTLP JSON file), and the agent's
//! own Prometheus metrics.

pub mod disk;
pub mod jsonl;
pub mod live;
pub mod metrics;
pub mod otlp;
