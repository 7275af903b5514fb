//! The episode engine: pure logic. It is fed attributed records and the
//! time, and hands out closed episodes. No kernel, no I/O, no clock of its
//! own: the agent calls [`Engine::advance`] with the current time.
//!
//! Rules (README "Episodes"): see `rules.rs`.

pub mod episode;

use std::time::Duration;

use crate::workload::Attributed;
pub use episode::{CloseReason, Episode, EpisodeKind};

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

pub struct Engine {
    // filled in by the implementation
}

impl Engine {
    /// `seed` makes the trace and span ids (the agent passes a random one).
    pub fn new(rules: Rules, seed: u64) -> Self {
        let _ = (rules, seed);
        todo!()
    }

    /// Takes one record into the reorder window.
    pub fn push(&mut self, record: Attributed) {
        let _ = record;
        todo!()
    }

    /// Processes the records older than `now - reorder_window` in time order
    /// and closes what is due at `now` (Unix ns); returns closed episodes.
    pub fn advance(&mut self, now_unix_nano: u64) -> Vec<Episode> {
        let _ = now_unix_nano;
        todo!()
    }

    /// At stop: processes everything pending and closes every open episode
    /// (`CloseReason::Shutdown`).
    pub fn finish(&mut self, now_unix_nano: u64) -> Vec<Episode> {
        let _ = now_unix_nano;
        todo!()
    }

    pub fn stats(&self) -> EngineStats {
        todo!()
    }
}
