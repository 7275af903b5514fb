//! CPU and allocation profiles of watched Go processes. The kernel counts
//! samples by stack: CPU samples from perf events (`sampler`), allocation
//! samples from the Go runtime source's uprobes; every [`SLICE`] the agent
//! drains them (`counts`) with the process's memory mappings at that moment
//! (`slices`, pure: what covers which time); a thread of its own (`writer`)
//! symbolizes (`symbolize`) and writes them as gzipped pprof (`pprof`): one
//! rolling file per process and kind per window, and one per episode and
//! kind, named on the episode's root span, with its flame graph
//! (`flamegraph`) and, to a collector, as an OTLP profile. `profiler`
//! drives it all.

pub mod counts;
pub mod flamegraph;
pub mod maps;
pub mod pprof;
pub mod profiler;
pub mod sampler;
pub mod slices;
pub mod symbolize;
pub mod writer;

use std::time::Duration;

/// What Parca and Pyroscope sample at: prime, so it does not beat with
/// periodic work (timers at 10 or 100 Hz).
pub const DEFAULT_HZ: u64 = 19;
/// The kernel's own bound (`perf_event_max_sample_rate` defaults to 100 kHz);
/// more than this costs more than any profile is worth.
pub const MAX_HZ: u64 = 1000;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// How often the kernel's counts are drained: an episode's profile covers
/// its span to this granularity.
pub const SLICE: Duration = Duration::from_secs(5);
/// How long drained slices are kept for episodes still open: the longest
/// episode (`--episode-max-length`, 5 min by default) and a slice more.
pub const KEEP: Duration = Duration::from_secs(6 * 60);

/// What a profile measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    Cpu,
    Alloc,
}

impl ProfileKind {
    /// In file names and span attributes: `cpu`, `alloc`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Alloc => "alloc",
        }
    }
}
