//! Helpers for observer's end-to-end tests.
//!
//! The tests run the real agent (`OBSERVER_BIN`) against this machine's kernel,
//! make traffic only on loopback or between network namespaces they create,
//! and compare what the agent reports with the kernel's own counters.

pub mod cgroup;
pub mod collector;
pub mod command;
pub mod dashboard;
pub mod episodes;
pub mod gofixture;
pub mod held;
pub mod inns;
pub mod netns;
pub mod nft;
pub mod nstat;
pub mod observer;
pub mod otlp;
pub mod promql;
pub mod rawtcp;
pub mod require;
pub mod resetgen;
pub mod scrape;
pub mod tls;
pub mod tmux;
pub mod tracefs;
pub mod traceql;
