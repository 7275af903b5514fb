//! Where events go: JSON lines on disk and the live view on the terminal.

pub mod jsonl;
pub mod live;
