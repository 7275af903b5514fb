//! The episode engine: pure logic. It is fed attributed records and the
//! time, and hands out closed episodes. No kernel, no I/O, no clock of its
//! own: the agent calls [`Engine::advance`] with the current time.
//!
//! Rules (README "Episodes"): which record opens, extends or only counts
//! into which episode is in `rules.rs`; the routing is here:
//! - per workload key at most one `memory.pressure` and one
//!   `tcp.reset.burst` episode are open;
//! - memory and Go records go to the open memory episode (a pressure signal
//!   opens one when none is open); network records go to the open memory
//!   episode when there is one (counted, without keeping it open), else to
//!   the reset burst (opening one). A burst open when a memory episode opens
//!   gets no more records and closes after its quiet period;
//! - an episode closes `quiet` after the last record that kept it open, or
//!   `max_length` after its start (the next episode of that kind of the
//!   workload, when it opens within `quiet` of that one's end, links to it
//!   as `previous`);
//! - an OOM kill is a child of the memory episode (opening one if none is
//!   open) and closes it with `OomKill`. The close is handed out
//!   [`OOM_LINGER`] after the last kill, so that the kill's aftermath (the
//!   `memory.events` rise the kill itself causes, further victims of a group
//!   kill, PSI read after it) counts into it instead of opening a new
//!   episode; those records do not keep it open;
//! - an episode's start is its first record's start (an interval child's
//!   start), its end the latest end of the records in it: the root covers
//!   every child.
//!
//! Time: records wait in the reorder window and are processed oldest first
//! once older than `now - reorder_window` (or early, past `max_pending`).
//! The engine's clock is the newest time processed; episodes close when the
//! clock passes their deadline. A record whose time is before the end of an
//! episode of its workload already closed is **late**: counted and dropped
//! (it could no longer be part of that episode, and opening another in the
//! past would overlap it). So is any record older than `max_length + quiet`
//! behind the clock, when the engine no longer remembers that far.

mod budget;
mod building;
mod handed;
mod ids;
mod rules;
mod window;

pub mod episode;

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use crate::event::Record;
use crate::workload::{Attributed, Identity, WorkloadKey};
use building::{Building, Timing};
pub use episode::{CloseReason, Episode, EpisodeKind, OpenEpisode, Signal};
use handed::Handed;
use ids::Ids;
use rules::Role;
/// What a record counts (`Signal`s), as episodes count it: the live view's
/// rows count the same way.
pub(crate) use rules::count;
use window::Window;

/// How long an OOM-killed episode takes its aftermath in before it is
/// handed out (at most `quiet`).
pub const OOM_LINGER: Duration = Duration::from_secs(1);

/// Drops are counted from the per-second `net.drop.summary` records,
/// stamped at their last drop but read up to a tick later. An episode with
/// network records stays open at least this long after the last of them, so
/// the summary counting their drops has arrived before it closes instead of
/// coming late (a summary never keeps one open).
pub const SUMMARY_GRACE: Duration = Duration::from_millis(1500);

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The engine's knobs (flags `--episode-quiet`, `--episode-max-length`,
/// `--episode-span-budget`, …).
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// An episode with no signal for this long closes (default 5 s).
    pub quiet: Duration,
    /// An episode longer than this closes; the next links to it (default 5 min).
    pub max_length: Duration,
    /// Child spans per record kind per episode; past it, one folded aggregate (default 300).
    pub span_budget: usize,
    /// Records are merged in time order within this window (default 2 s).
    pub reorder_window: Duration,
    /// Open episodes at most; a new one past it is counted, not opened (default 4096).
    pub max_open: usize,
    /// Records waiting in the reorder window at most; past it the oldest are processed early (default 65536).
    pub max_pending: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            quiet: Duration::from_secs(5),
            max_length: Duration::from_secs(300),
            span_budget: 300,
            reorder_window: Duration::from_secs(2),
            max_open: 4096,
            max_pending: 65536,
        }
    }
}

/// The engine's own counters, for the status line and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub records: u64,
    /// Records older than an episode of their workload already handed out.
    pub late: u64,
    /// Episodes not opened because `max_open` were open.
    pub capped: u64,
    /// Records processed before the reorder window passed, because `max_pending` were waiting.
    pub forced: u64,
    pub opened: u64,
    pub closed: u64,
    pub open: u64,
}

type Slot = (EpisodeKind, WorkloadKey);

pub struct Engine {
    rules: Rules,
    timing: Timing,
    ids: Ids,
    window: Window,
    open: HashMap<Slot, Building>,
    /// (deadline, slot) of every open episode.
    deadlines: BTreeSet<(u64, EpisodeKind, WorkloadKey)>,
    handed: Handed,
    /// Closed, not yet returned (closes while pushing, past `max_pending`).
    out: Vec<Episode>,
    /// The newest time processed, Unix ns.
    clock: u64,
    stats: EngineStats,
}

impl Engine {
    /// `seed` makes the trace and span ids (the agent passes a random one).
    pub fn new(rules: Rules, seed: u64) -> Self {
        let timing = Timing {
            quiet: nanos(rules.quiet),
            max_length: nanos(rules.max_length),
            oom_linger: nanos(OOM_LINGER.min(rules.quiet)),
            summary_grace: nanos(SUMMARY_GRACE),
        };
        let handed =
            Handed::new(timing.max_length.saturating_add(timing.quiet), rules.max_open.saturating_mul(4).max(1024));
        Self {
            rules,
            timing,
            ids: Ids::new(seed),
            window: Window::default(),
            open: HashMap::new(),
            deadlines: BTreeSet::new(),
            handed,
            out: Vec::new(),
            clock: 0,
            stats: EngineStats::default(),
        }
    }

    /// Takes one record into the reorder window. Past `max_pending` waiting,
    /// the oldest is processed now (`forced`).
    pub fn push(&mut self, record: Attributed) {
        self.stats.records += 1;
        self.window.push(record);
        while self.window.len() > self.rules.max_pending {
            let Some(a) = self.window.pop_oldest() else { break };
            self.stats.forced += 1;
            self.process(a);
        }
    }

    /// Processes the records older than `now - reorder_window` in time order
    /// and closes what is due at `now` (Unix ns); returns closed episodes.
    pub fn advance(&mut self, now_unix_nano: u64) -> Vec<Episode> {
        let horizon = now_unix_nano.saturating_sub(nanos(self.rules.reorder_window));
        while let Some(a) = self.window.pop_due(horizon) {
            self.process(a);
        }
        self.clock = self.clock.max(horizon);
        self.close_due(self.clock);
        self.handed.prune(self.clock);
        std::mem::take(&mut self.out)
    }

    /// At stop: processes everything pending and closes every open episode
    /// (`CloseReason::Shutdown`; one already due by `now` closes by its rule,
    /// an OOM-killed one with `OomKill`).
    pub fn finish(&mut self, now_unix_nano: u64) -> Vec<Episode> {
        while let Some(a) = self.window.pop_oldest() {
            self.process(a);
        }
        self.clock = self.clock.max(now_unix_nano);
        self.close_due(self.clock);
        while let Some((_, kind, key)) = self.deadlines.pop_first() {
            if let Some(b) = self.open.remove(&(kind, key)) {
                let by = if b.killed.is_some() { CloseReason::OomKill } else { CloseReason::Shutdown };
                self.hand_out(key, b, by);
            }
        }
        std::mem::take(&mut self.out)
    }

    /// The open episodes, in no particular order (the engine stays pure: a
    /// view asks, nothing is pushed to it).
    pub fn open_episodes(&self) -> Vec<OpenEpisode> {
        self.open.iter().map(|(&(_, key), b)| b.open_view(key)).collect()
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats { open: self.open.len() as u64, ..self.stats }
    }

    fn process(&mut self, a: Attributed) {
        let Attributed { key, identity, record } = a;
        let t = record.time_unix_nano;
        let class = rules::classify(&record);
        // A summary soon after an episode's end counts drops of that episode
        // read too late: late, not the start of another.
        let slack = if class.summary { self.timing.summary_grace } else { 0 };
        if self.handed.is_late(&key, t, slack) {
            self.stats.late += 1;
            return;
        }
        self.clock = self.clock.max(t);
        self.close_due(self.clock);
        let memory = (EpisodeKind::MemoryPressure, key);
        let memory_open = self.open.get(&memory).map(|b| b.killed.is_none());
        let role = class.role;
        match role {
            Role::Ignored => {}
            Role::Pressure | Role::Extends | Role::MemoryCount => match memory_open {
                // Open, or taking in its kill's aftermath (not kept open by it).
                Some(open) => self.add(memory, identity, class, record, open && role != Role::MemoryCount),
                None if role == Role::Pressure => self.open_new(memory, identity, class, record),
                None => {}
            },
            Role::OomKill => {
                if memory_open.is_none() {
                    self.open_new(memory, identity, class, record);
                } else {
                    self.add(memory, identity, class, record, false);
                }
                if let Some(b) = self.open.get_mut(&memory) {
                    b.killed = Some(b.killed.map_or(t, |k| k.max(t)));
                    self.reindex(memory);
                }
            }
            Role::Network | Role::NetworkCount => {
                let burst = (EpisodeKind::TcpResetBurst, key);
                if memory_open == Some(true) {
                    self.add(memory, identity, class, record, false);
                } else if self.open.contains_key(&burst) {
                    let extend = !class.summary && role == Role::Network;
                    self.add(burst, identity, class, record, extend);
                } else if role == Role::Network {
                    self.open_new(burst, identity, class, record);
                }
            }
        }
    }

    fn add(&mut self, slot: Slot, identity: Arc<Identity>, class: rules::Class, record: Record, extend: bool) {
        let Some(b) = self.open.get_mut(&slot) else { return };
        let t = record.time_unix_nano;
        // The workload as last known: a Go process's settings (`GoAttach`,
        // read at the next tick) can reach its identity after the record
        // that opened the episode was attributed.
        b.set_workload(identity);
        b.add(class, record, self.rules.span_budget, &mut self.ids);
        if extend {
            b.extend(t);
        }
        self.reindex(slot);
    }

    fn open_new(
        &mut self,
        slot: Slot,
        identity: std::sync::Arc<crate::workload::Identity>,
        class: rules::Class,
        record: crate::event::Record,
    ) {
        if self.open.len() >= self.rules.max_open {
            self.stats.capped += 1;
            return;
        }
        let (kind, key) = slot;
        let previous = self.handed.take_link(&key, kind, class.start, self.timing.quiet);
        let t = record.time_unix_nano;
        let mut b = Building::new(kind, self.ids.root(), identity, &class, previous);
        b.add(class, record, self.rules.span_budget, &mut self.ids);
        b.extend(t);
        self.open.insert(slot, b);
        self.stats.opened += 1;
        self.reindex(slot);
    }

    /// Moves the episode's entry in the deadline index to its current deadline.
    fn reindex(&mut self, slot: Slot) {
        let Some(b) = self.open.get_mut(&slot) else { return };
        let (due, _) = b.due(self.timing);
        if due != b.deadline {
            self.deadlines.remove(&(b.deadline, slot.0, slot.1));
            self.deadlines.insert((due, slot.0, slot.1));
            b.deadline = due;
        }
    }

    /// Closes every episode whose deadline is at or before `now`.
    fn close_due(&mut self, now: u64) {
        while let Some(&(due, kind, key)) = self.deadlines.first() {
            if due > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(b) = self.open.remove(&(kind, key)) {
                let (_, by) = b.due(self.timing);
                self.hand_out(key, b, by);
            }
        }
    }

    fn hand_out(&mut self, key: WorkloadKey, b: Building, by: CloseReason) {
        let episode = b.into_episode(by);
        self.handed.handed_out(key, episode.kind, episode.end_unix_nano, episode.root, by);
        self.stats.closed += 1;
        self.out.push(episode);
    }
}

#[cfg(test)]
mod tests;
