//! Helpers for observer's end-to-end tests.
//!
//! The tests run the real agent (`OBSERVER_BIN`) against this machine's kernel,
//! make traffic only on loopback or between network namespaces they create,
//! and compare what the agent reports with the kernel's own counters.

use std::time::Duration;

pub mod cgroup;
pub mod chart;
pub mod collector;
pub mod command;
pub mod dashboard;
pub mod episodes;
pub mod gofixture;
pub mod held;
pub mod inns;
pub mod jaeger;
pub mod kubeapi;
pub mod kubepods;
pub mod netns;
pub mod nft;
pub mod nstat;
pub mod observer;
pub mod otlp;
pub mod pprof;
pub mod promql;
pub mod rawtcp;
pub mod require;
pub mod resetgen;
pub mod scrape;
pub mod tls;
pub mod tmux;
pub mod tracefs;
pub mod traceql;

/// A bound on waiting for something (never an assertion on speed),
/// stretched by `OBSERVER_TEST_TIME_SCALE`: the VM harness sets it, as
/// emulation makes an agent's start, say, tens of times slower.
pub fn bound(d: Duration) -> Duration {
    let scale = std::env::var("OBSERVER_TEST_TIME_SCALE").ok().and_then(|s| s.parse::<u32>().ok());
    d * scale.unwrap_or(1).max(1)
}
