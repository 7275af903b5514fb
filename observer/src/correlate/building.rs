//! An episode while it is open: its counts, children and limits so far, and
//! when it is due to close.

use std::{collections::BTreeMap, sync::Arc};

use super::{
    budget::Spans,
    episode::{CloseReason, Episode, EpisodeKind, OpenEpisode, Signal, SpanRef},
    ids::Ids,
    rules::{self, Class},
};
use crate::{
    event::{MemcgLimits, Record},
    workload::Identity,
};

/// Durations of the rules, in ns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub quiet: u64,
    pub max_length: u64,
    pub oom_linger: u64,
    /// How long an episode with network records waits for the drop summary
    /// that counts their drops (see `SUMMARY_GRACE`).
    pub summary_grace: u64,
}

#[derive(Debug)]
pub(crate) struct Building {
    pub kind: EpisodeKind,
    pub root: SpanRef,
    workload: Arc<Identity>,
    start: u64,
    end: u64,
    /// The last record that kept it open.
    last_signal: u64,
    /// The last network record (not a summary) in it.
    last_network: Option<u64>,
    previous: Option<SpanRef>,
    limits_at_open: Option<MemcgLimits>,
    limits_at_close: Option<MemcgLimits>,
    counts: BTreeMap<Signal, u64>,
    spans: Spans,
    /// The last OOM kill in it: it closes `oom_linger` after.
    pub killed: Option<u64>,
    /// Its entry in the engine's deadline index.
    pub deadline: u64,
}

impl Building {
    pub(crate) fn new(
        kind: EpisodeKind,
        root: SpanRef,
        workload: Arc<Identity>,
        first: &Class,
        previous: Option<SpanRef>,
    ) -> Self {
        Self {
            kind,
            root,
            workload,
            start: first.start,
            end: first.end,
            last_signal: first.end,
            last_network: None,
            previous,
            limits_at_open: None,
            limits_at_close: None,
            counts: BTreeMap::new(),
            spans: Spans::default(),
            killed: None,
            deadline: u64::MAX,
        }
    }

    /// Counts `record` into it; the root grows to cover it.
    pub(crate) fn add(&mut self, class: Class, record: Record, budget: usize, ids: &mut Ids) {
        rules::count(&record, &mut self.counts);
        if let Some(l) = class.limits {
            self.limits_at_open.get_or_insert(l);
            self.limits_at_close = Some(l);
        }
        self.start = self.start.min(class.start);
        // After an OOM kill only children (further kills) move the end: the
        // kill's aftermath is counted, the root ends at the (last) kill.
        if (self.killed.is_none() || class.child.is_some()) && !class.summary {
            self.end = self.end.max(class.end).max(record.time_unix_nano);
        }
        if matches!(class.role, rules::Role::Network | rules::Role::NetworkCount) && !class.summary {
            self.last_network = Some(self.last_network.map_or(class.end, |n| n.max(class.end)));
        }
        if let Some(kind) = class.child {
            self.spans.add(kind, class.start, class.end, record, budget, ids);
        }
    }

    /// Keeps it open from `t` on.
    pub(crate) fn extend(&mut self, t: u64) {
        self.last_signal = self.last_signal.max(t);
    }

    /// When it closes, and why, if nothing extends it.
    pub(crate) fn due(&self, t: Timing) -> (u64, CloseReason) {
        if let Some(kill) = self.killed {
            return (kill.saturating_add(t.oom_linger), CloseReason::OomKill);
        }
        let mut quiet = self.last_signal.saturating_add(t.quiet);
        if let Some(network) = self.last_network {
            quiet = quiet.max(network.saturating_add(t.summary_grace));
        }
        let max = self.start.saturating_add(t.max_length);
        if quiet <= max { (quiet, CloseReason::Quiet) } else { (max, CloseReason::MaxLength) }
    }

    /// What it holds so far, for a view (counts cloned, children not).
    /// The workload's newest identity (records are attributed as they come).
    pub(crate) fn set_workload(&mut self, workload: Arc<Identity>) {
        self.workload = workload;
    }

    pub(crate) fn open_view(&self, key: crate::workload::WorkloadKey) -> OpenEpisode {
        OpenEpisode {
            kind: self.kind,
            key,
            root: self.root,
            workload: self.workload.clone(),
            start_unix_nano: self.start,
            end_unix_nano: self.end,
            counts: self.counts.clone(),
        }
    }

    pub(crate) fn into_episode(self, closed_by: CloseReason) -> Episode {
        let (children, folded) = self.spans.finish();
        Episode {
            kind: self.kind,
            root: self.root,
            workload: self.workload,
            start_unix_nano: self.start,
            end_unix_nano: self.end,
            closed_by,
            previous: self.previous,
            limits_at_open: self.limits_at_open,
            limits_at_close: self.limits_at_close,
            counts: self.counts,
            children,
            folded,
            profiles: Vec::new(),
        }
    }
}
