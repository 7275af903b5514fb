//! What the engine remembers of episodes already handed out: per workload,
//! the latest end (a record older than it is late) and, for an episode closed
//! at its maximum length, its root (the next one of that kind links to it).
//!
//! Bounded: an entry goes once it is older than the horizon (`max_length` +
//! `quiet` behind the engine's clock; any record older than that is late
//! whatever its workload), and past `cap` entries the oldest goes early,
//! raising the floor below which every record is late.

use std::collections::{BTreeSet, HashMap};

use super::episode::{CloseReason, EpisodeKind, SpanRef};
use crate::workload::WorkloadKey;

#[derive(Debug, Default)]
struct Closed {
    end: u64,
    /// Per kind: the end and root of the last episode when it closed at max length.
    link: [Option<(u64, SpanRef)>; 2],
}

fn slot(kind: EpisodeKind) -> usize {
    match kind {
        EpisodeKind::MemoryPressure => 0,
        EpisodeKind::TcpResetBurst => 1,
    }
}

#[derive(Debug)]
pub(crate) struct Handed {
    by_key: HashMap<WorkloadKey, Closed>,
    by_end: BTreeSet<(u64, WorkloadKey)>,
    /// Records before this are late, whatever their workload.
    floor: u64,
    horizon: u64,
    cap: usize,
}

impl Handed {
    pub(crate) fn new(horizon: u64, cap: usize) -> Self {
        Self { by_key: HashMap::new(), by_end: BTreeSet::new(), floor: 0, horizon, cap: cap.max(1) }
    }

    /// Whether a record at `t` comes after its workload's episode was handed
    /// out: before that episode's end, or within `slack` after it.
    pub(crate) fn is_late(&self, key: &WorkloadKey, t: u64, slack: u64) -> bool {
        t < self.floor || self.by_key.get(key).is_some_and(|c| t < c.end.saturating_add(slack))
    }

    pub(crate) fn handed_out(&mut self, key: WorkloadKey, kind: EpisodeKind, end: u64, root: SpanRef, by: CloseReason) {
        let c = self.by_key.entry(key).or_default();
        self.by_end.remove(&(c.end, key));
        c.end = c.end.max(end);
        self.by_end.insert((c.end, key));
        c.link[slot(kind)] = (by == CloseReason::MaxLength).then_some((end, root));
        while self.by_key.len() > self.cap {
            let Some((end, key)) = self.by_end.pop_first() else { break };
            self.by_key.remove(&key);
            self.floor = self.floor.max(end);
        }
    }

    /// The root an episode of `kind` opening at `start` continues: the one
    /// before closed at max length and ended less than `quiet` before.
    pub(crate) fn take_link(
        &mut self,
        key: &WorkloadKey,
        kind: EpisodeKind,
        start: u64,
        quiet: u64,
    ) -> Option<SpanRef> {
        let c = self.by_key.get_mut(key)?;
        let (end, root) = c.link[slot(kind)].take()?;
        (start < end.saturating_add(quiet)).then_some(root)
    }

    /// Forgets what is older than the horizon behind `clock`.
    pub(crate) fn prune(&mut self, clock: u64) {
        let floor = clock.saturating_sub(self.horizon);
        self.floor = self.floor.max(floor);
        while let Some(&(end, key)) = self.by_end.first() {
            if end > self.floor {
                break;
            }
            self.by_end.pop_first();
            self.by_key.remove(&key);
        }
    }
}
