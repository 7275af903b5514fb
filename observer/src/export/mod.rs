//! Where records and episodes go: JSON lines on disk, the live view on the
//! terminal, and OTLP (a collector, and the OTLP JSON file).

pub mod disk;
pub mod jsonl;
pub mod live;
pub mod otlp;
