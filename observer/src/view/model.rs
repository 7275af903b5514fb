//! The live view's model: pure data, no terminal. The agent feeds it every
//! attributed record (the same records the events file gets, keyed to the
//! workload the attributor chose), the open episodes and the closed ones,
//! and marks an interval about once a second; the terminal thread draws
//! from [`Snapshot`]s of it.
//!
//! Per workload it keeps a [`Tally`] since start and of the last full
//! interval. The counts are the episodes' own (`correlate::count`), so a
//! row's resets or GC cycles are exactly the records seen.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use crate::{
    correlate::{self, Episode, EpisodeKind, OpenEpisode, Signal},
    event::{Event, Record},
    workload::{Attributed, Identity, WorkloadKey},
};

/// Workloads kept at most; past it the one quiet the longest makes room.
pub const MAX_ROWS: usize = 1024;
/// Closed episodes kept for the list.
pub const MAX_CLOSED: usize = 256;
/// Pids shown per workload.
pub const MAX_PIDS: usize = 4;

/// What one workload did: counts per signal and the times that are sums.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// Records attributed to it.
    pub records: u64,
    pub counts: BTreeMap<Signal, u64>,
    /// Sum of the GC cycles' clock triple (stops of the world and mark), ns.
    pub gc_ns: u64,
    pub assist_ns: u64,
    pub throttle_ns: u64,
}

impl Tally {
    pub fn add(&mut self, record: &Record) {
        self.records += 1;
        correlate::count(record, &mut self.counts);
        match &record.event {
            Event::GoGc(g) => {
                self.gc_ns +=
                    g.sweep_termination_ns.unwrap_or(0) + g.mark_ns.unwrap_or(0) + g.mark_termination_ns.unwrap_or(0)
            }
            Event::GoAssist(a) => self.assist_ns += a.duration_ns.unwrap_or(0),
            Event::MemcgThrottle(t) => self.throttle_ns += t.duration_ns.unwrap_or(0),
            _ => {}
        }
    }

    pub fn get(&self, signal: &Signal) -> u64 {
        self.counts.get(signal).copied().unwrap_or(0)
    }

    /// Dropped packets, every reason.
    pub fn drops(&self) -> u64 {
        self.counts.iter().filter(|(s, _)| matches!(s, Signal::NetDrop(_))).map(|(_, n)| n).sum()
    }

    /// What happened since `earlier` (a copy of this tally taken then).
    fn since(&self, earlier: &Tally) -> Tally {
        let counts = self
            .counts
            .iter()
            .map(|(s, &n)| (s.clone(), n - earlier.counts.get(s).copied().unwrap_or(0)))
            .filter(|&(_, n)| n > 0)
            .collect();
        Tally {
            records: self.records - earlier.records,
            counts,
            gc_ns: self.gc_ns - earlier.gc_ns,
            assist_ns: self.assist_ns - earlier.assist_ns,
            throttle_ns: self.throttle_ns - earlier.throttle_ns,
        }
    }
}

/// One workload that had activity.
#[derive(Clone, Debug)]
pub struct Row {
    pub key: WorkloadKey,
    pub identity: Arc<Identity>,
    /// The first pids its records named (a process workload: its own).
    pub pids: Vec<u32>,
    /// More pids than `pids` were seen.
    pub more_pids: bool,
    pub total: Tally,
    /// The last full interval.
    pub last: Tally,
    /// `total` when the current interval began.
    mark: Tally,
    /// The last GC cycle's live heap (marked) and goal, bytes.
    pub heap: Option<u64>,
    pub goal: Option<u64>,
    /// The kind of its open episode, memory first (the row lights up).
    pub open: Option<EpisodeKind>,
    /// When it last had a record (the model's record counter then).
    seen: u64,
}

impl Row {
    fn new(key: WorkloadKey, identity: Arc<Identity>) -> Self {
        Row {
            key,
            identity,
            pids: Vec::new(),
            more_pids: false,
            total: Tally::default(),
            last: Tally::default(),
            mark: Tally::default(),
            heap: None,
            goal: None,
            open: None,
            seen: 0,
        }
    }

    fn add(&mut self, record: &Record) {
        self.total.add(record);
        let pid = match self.key {
            WorkloadKey::Process { pid, .. } => Some(pid),
            _ => crate::workload::attributor::who(&record.event).and_then(|w| w.pid),
        };
        if let Some(pid) = pid
            && !self.pids.contains(&pid)
        {
            if self.pids.len() < MAX_PIDS {
                self.pids.push(pid);
            } else {
                self.more_pids = true;
            }
        }
        if let Event::GoGc(g) = &record.event {
            self.heap = g.heap_marked_bytes.or(self.heap);
            self.goal = g.heap_goal_bytes.or(self.goal);
        }
    }

    /// The workload's name as it chose it, escaped for a terminal.
    pub fn name(&self) -> String {
        crate::export::live::printable(&self.identity.service_name)
    }
}

/// What the terminal thread draws: a copy, so drawing never holds the agent.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub rows: Vec<Row>,
    pub open: Vec<OpenEpisode>,
    /// Newest first.
    pub closed: Vec<Arc<Episode>>,
    /// The agent's health (events, lost, late, dropped, exporter).
    pub status: String,
    /// The length of the last full interval (rates are per second of it).
    pub interval: Duration,
    /// Workloads that made room for newer ones (past `MAX_ROWS`).
    pub rows_evicted: u64,
}

#[derive(Default)]
pub struct Model {
    rows: HashMap<WorkloadKey, Row>,
    open: Vec<OpenEpisode>,
    closed: VecDeque<Arc<Episode>>,
    status: String,
    interval: Duration,
    records: u64,
    rows_evicted: u64,
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// One attributed record (before the engine takes it).
    pub fn record(&mut self, a: &Attributed) {
        self.records += 1;
        if !self.rows.contains_key(&a.key) && self.rows.len() >= MAX_ROWS {
            self.evict();
        }
        let row = self.rows.entry(a.key).or_insert_with(|| Row::new(a.key, a.identity.clone()));
        // The identity grows (a Go version learnt later).
        if !Arc::ptr_eq(&row.identity, &a.identity) {
            row.identity = a.identity.clone();
        }
        row.seen = self.records;
        row.add(&a.record);
    }

    /// The row quiet the longest (not one in an episode, when there is another).
    fn evict(&mut self) {
        let victim = self.rows.values().min_by_key(|r| (r.open.is_some(), r.seen)).map(|r| r.key);
        if let Some(key) = victim {
            self.rows.remove(&key);
            self.rows_evicted += 1;
        }
    }

    /// The engine's open episodes now.
    pub fn set_open(&mut self, open: Vec<OpenEpisode>) {
        for row in self.rows.values_mut() {
            row.open = None;
        }
        for e in &open {
            if let Some(row) = self.rows.get_mut(&e.key)
                && row.open != Some(EpisodeKind::MemoryPressure)
            {
                row.open = Some(e.kind);
            }
        }
        self.open = open;
    }

    pub fn closed(&mut self, episode: Arc<Episode>) {
        if self.closed.len() >= MAX_CLOSED {
            self.closed.pop_back();
        }
        self.closed.push_front(episode);
    }

    /// Ends the current interval (`length` long): what each row did in it
    /// becomes its `last`.
    pub fn interval(&mut self, length: Duration) {
        for row in self.rows.values_mut() {
            row.last = row.total.since(&row.mark);
            row.mark = row.total.clone();
        }
        self.interval = length;
    }

    pub fn set_status(&mut self, status: String) {
        self.status = status;
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            rows: self.rows.values().cloned().collect(),
            open: self.open.clone(),
            closed: self.closed.iter().cloned().collect(),
            status: self.status.clone(),
            interval: self.interval,
            rows_evicted: self.rows_evicted,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::Direction;

    fn of_kind(kind: &str) -> Record {
        crate::export::otlp::testdata::one_record_of_every_kind()
            .into_iter()
            .find(|r| crate::export::otlp::attributes::record_kind(&r.event) == kind)
            .unwrap()
    }

    pub(crate) fn reset(direction: Direction, pid: Option<u32>) -> Record {
        let mut r = of_kind("tcp.reset");
        if let Event::TcpReset(t) = &mut r.event {
            t.direction = direction;
            t.who.pid = pid;
        }
        r
    }

    pub(crate) fn gc(heap: u64, goal: u64) -> Record {
        let mut r = of_kind("go.gc");
        if let Event::GoGc(g) = &mut r.event {
            (g.heap_marked_bytes, g.heap_goal_bytes) = (Some(heap), Some(goal));
            (g.sweep_termination_ns, g.mark_ns, g.mark_termination_ns) = (Some(10), Some(100), Some(5));
        }
        r
    }

    pub(crate) fn attributed(key: WorkloadKey, name: &str, record: Record) -> Attributed {
        Attributed { key, identity: Arc::new(Identity { service_name: name.into(), ..Identity::default() }), record }
    }

    const NS: WorkloadKey = WorkloadKey::Netns { netns: 7 };
    const GO: WorkloadKey = WorkloadKey::Process { cgroup_id: 1, pid: 42 };

    #[test]
    fn rows_count_exactly_per_workload_since_start_and_per_interval() {
        let mut m = Model::new();
        for i in 0..3 {
            m.record(&attributed(NS, "rst", reset(Direction::Sent, None)));
            m.record(&attributed(NS, "rst", reset(Direction::Received, Some(100 + i))));
        }
        m.record(&attributed(GO, "api", gc(3 << 20, 8 << 20)));
        m.interval(Duration::from_secs(1));
        m.record(&attributed(NS, "rst", reset(Direction::Sent, None)));
        m.record(&attributed(GO, "api", gc(4 << 20, 9 << 20)));
        m.record(&attributed(GO, "api", gc(5 << 20, 10 << 20)));
        m.interval(Duration::from_secs(1));
        let s = m.snapshot();
        let row = |k| s.rows.iter().find(|r| r.key == k).unwrap();
        let ns = row(NS);
        assert_eq!(ns.total.get(&Signal::TcpReset("sent")), 4);
        assert_eq!(ns.total.get(&Signal::TcpReset("received")), 3);
        assert_eq!(ns.last.get(&Signal::TcpReset("sent")), 1);
        assert_eq!(ns.last.get(&Signal::TcpReset("received")), 0);
        assert_eq!((ns.pids.clone(), ns.more_pids), (vec![100, 101, 102], false));
        let go = row(GO);
        assert_eq!((go.total.get(&Signal::GcCycle), go.last.get(&Signal::GcCycle)), (3, 2));
        assert_eq!((go.total.gc_ns, go.last.gc_ns), (345, 230));
        assert_eq!((go.heap, go.goal), (Some(5 << 20), Some(10 << 20)));
        assert_eq!(go.pids, vec![42]);
        assert_eq!(s.interval, Duration::from_secs(1));
    }

    #[test]
    fn a_row_lights_up_while_its_workload_has_an_open_episode() {
        let mut m = Model::new();
        m.record(&attributed(NS, "rst", reset(Direction::Sent, None)));
        m.record(&attributed(GO, "api", gc(1, 2)));
        let open = |kind, key| OpenEpisode {
            kind,
            key,
            root: crate::correlate::episode::SpanRef { trace_id: [1; 16], span_id: [2; 8] },
            workload: Arc::new(Identity::default()),
            start_unix_nano: 0,
            end_unix_nano: 0,
            counts: BTreeMap::new(),
        };
        m.set_open(vec![open(EpisodeKind::TcpResetBurst, GO), open(EpisodeKind::MemoryPressure, GO)]);
        let s = m.snapshot();
        let kind = |k| s.rows.iter().find(|r| r.key == k).unwrap().open;
        assert_eq!((kind(NS), kind(GO)), (None, Some(EpisodeKind::MemoryPressure)));
        m.set_open(Vec::new());
        assert!(m.snapshot().rows.iter().all(|r| r.open.is_none()));
    }

    #[test]
    fn rows_and_episodes_are_bounded() {
        let mut m = Model::new();
        for pid in 0..(MAX_ROWS as u32 + 5) {
            m.record(&attributed(WorkloadKey::Process { cgroup_id: 0, pid }, "p", reset(Direction::Sent, None)));
        }
        let s = m.snapshot();
        assert_eq!((s.rows.len(), s.rows_evicted), (MAX_ROWS, 5));
        assert!(s.rows.iter().all(|r| !matches!(r.key, WorkloadKey::Process { pid, .. } if pid < 5)), "oldest went");
        let episode = Arc::new(crate::export::otlp::testdata::episode_with_every_child());
        for _ in 0..MAX_CLOSED + 3 {
            m.closed(episode.clone());
        }
        assert_eq!(m.snapshot().closed.len(), MAX_CLOSED);
    }
}
