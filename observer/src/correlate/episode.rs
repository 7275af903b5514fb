//! A closed episode: what the engine hands to the exporters. Plain data; the
//! exporters decide how it looks on the wire (`export::otlp::spans`).

use std::{collections::BTreeMap, sync::Arc};

use serde::Serialize;

use crate::{event::MemcgLimits, event::Record, workload::Identity};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum EpisodeKind {
    /// One cgroup (or process) under memory pressure.
    #[serde(rename = "memory.pressure")]
    MemoryPressure,
    /// TCP resets, drops and retransmits of one workload outside any memory episode.
    #[serde(rename = "tcp.reset.burst")]
    TcpResetBurst,
}

impl EpisodeKind {
    pub fn name(self) -> &'static str {
        match self {
            EpisodeKind::MemoryPressure => "memory.pressure",
            EpisodeKind::TcpResetBurst => "tcp.reset.burst",
        }
    }
}

/// How an episode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// No signal for the quiet period.
    Quiet,
    /// An OOM kill in its cgroup (the kill is its last child).
    OomKill,
    /// It reached the maximum length; the next episode links to it.
    MaxLength,
    /// The agent stopped.
    Shutdown,
}

impl CloseReason {
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Quiet => "quiet",
            CloseReason::OomKill => "oom_kill",
            CloseReason::MaxLength => "max_length",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// A trace and span id pair (a span link's target).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SpanRef {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

#[derive(Clone, Debug)]
pub struct Episode {
    pub kind: EpisodeKind,
    /// The root span: its trace is the episode's.
    pub root: SpanRef,
    pub workload: Arc<Identity>,
    /// First signal and close, Unix ns.
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub closed_by: CloseReason,
    /// The episode this one continues (the one before reached max length).
    pub previous: Option<SpanRef>,
    /// The cgroup's limits as the first and the last record that carried them said.
    pub limits_at_open: Option<MemcgLimits>,
    pub limits_at_close: Option<MemcgLimits>,
    /// Exact count per signal (see `Signal`): always equal to the events,
    /// whether they became children, folded aggregates or counts only.
    pub counts: BTreeMap<Signal, u64>,
    /// One per GC cycle, throttle, reclaim run, OOM kill, reset, in time order,
    /// up to the per-kind budget.
    pub children: Vec<Child>,
    /// What went past the budget, per record kind.
    pub folded: Vec<Folded>,
    /// Profiles cut for it (filled by the agent at close, not by the engine).
    pub profiles: Vec<ProfileRef>,
}

/// A profile written for an episode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProfileRef {
    /// `cpu`.
    pub kind: &'static str,
    /// Inside the output directory: `profiles/<trace id>.cpu.pb.gz`.
    pub file: String,
    /// Random, 16 bytes: the id an OTLP profile of it carries.
    pub id: [u8; 16],
    /// Samples in it, and the time they cover (Unix ns).
    pub samples: u64,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

/// An episode still open, as the engine holds it so far (for a live view:
/// which workloads are in an episode, since when, with what counts).
#[derive(Clone, Debug)]
pub struct OpenEpisode {
    pub kind: EpisodeKind,
    pub key: crate::workload::WorkloadKey,
    pub root: SpanRef,
    pub workload: Arc<Identity>,
    pub start_unix_nano: u64,
    /// The latest end of its records so far.
    pub end_unix_nano: u64,
    pub counts: BTreeMap<Signal, u64>,
}

/// What `Episode::counts` counts. `Ord` gives a stable attribute order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Signal {
    /// `memory.events` counter rises (`high`, `max`, `low`, `oom`, `oom_kill`, `oom_group_kill`).
    MemoryEvents(&'static str),
    /// `memcg.throttle` events.
    Throttle,
    /// `memcg.reclaim` runs (tracepoints) or `memcg.reclaim.stat` rises.
    Reclaim,
    /// PSI stall rise, µs (`some`, `full`).
    PressureStallUs(&'static str),
    /// OOM kills (`oom:mark_victim`).
    OomKill,
    GcCycle,
    GcAssist,
    HeapGrowBytes,
    ScavengeBytes,
    /// TCP resets (`sent`, `received`).
    TcpReset(&'static str),
    /// Dropped packets per kernel reason.
    NetDrop(String),
    /// Retransmitted segments.
    RetransmitSegments,
}

impl Signal {
    /// The attribute name of this count (`observer.count.<…>`).
    pub fn name(&self) -> String {
        match self {
            Signal::MemoryEvents(c) => format!("memory_events.{c}"),
            Signal::Throttle => "memcg.throttle".into(),
            Signal::Reclaim => "memcg.reclaim".into(),
            Signal::PressureStallUs(c) => format!("memory.pressure.{c}_us"),
            Signal::OomKill => "oom_kill".into(),
            Signal::GcCycle => "go.gc".into(),
            Signal::GcAssist => "go.assist".into(),
            Signal::HeapGrowBytes => "go.heap_grow.bytes".into(),
            Signal::ScavengeBytes => "go.scavenge.bytes".into(),
            Signal::TcpReset(d) => format!("tcp.reset.{d}"),
            Signal::NetDrop(reason) => format!("net.drop.{reason}"),
            Signal::RetransmitSegments => "tcp.retransmit.segments".into(),
        }
    }
}

/// One child span: the record it stands for, with its interval.
#[derive(Clone, Debug)]
pub struct Child {
    pub span_id: [u8; 8],
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub record: Record,
}

/// Records of one kind past the budget, folded into one aggregate child.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Folded {
    pub span_id: [u8; 8],
    /// The record kind (`go.gc`, `memcg.throttle`, `tcp.reset`, …).
    pub kind: &'static str,
    pub count: u64,
    /// Of the kind's value (`unit`): duration for intervals, else 1 per record.
    pub sum: u64,
    pub min: u64,
    pub max: u64,
    pub unit: &'static str,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}
