//! What each record kind means to the episode engine: whether it opens or
//! keeps open an episode, what it counts, whether it is a child span.
//!
//! `memory.pressure` opens at a **pressure signal**:
//! - `memcg.events` whose delta has `high`, `max`, `low`, `oom`, `oom_kill`
//!   or `oom_group_kill` > 0;
//! - `memcg.throttle`, `memcg.reclaim` (every record is one run);
//! - `memcg.reclaim.stat` with any counter's delta > 0;
//! - `memcg.pressure` with `some_delta_us` > 0 (`full` is part of `some`);
//! - a `go.gc` cycle under **Go GC pressure** (see [`gc_pressure`]).
//!
//! The same signals keep it open, and so do `go.assist` events, which only
//! count into and extend an episode already open (assists happen in healthy
//! programs too). Plain GC cycles, `go.heap_grow`, `go.scavenge`,
//! `go.scavenge.summary` and `memcg.*` records without a rise count into an
//! open episode but neither open nor extend one; `go.attach` is ignored
//! (its settings reach the episode through the workload's identity). `memcg.throttle.idle` (calls of the throttle function
//! with nothing to do) is no sign of pressure and is ignored.
//!
//! `tcp.reset.burst` opens at, and is kept open by, `tcp.reset`,
//! `tcp.retransmit` and `net.drop.summary` with a count > 0. Individual
//! `net.drop` events are rate-limited samples of what the summaries count
//! exactly, so they are ignored (counting them too would count drops twice).

use super::episode::Signal;
use crate::event::{Direction, Event, GoGc, MemcgLimits, Record};

/// What a record does to the episodes of its workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Opens a memory episode, or extends the open one.
    Pressure,
    /// Extends an open memory episode, opens none (`go.assist`).
    Extends,
    /// Counted into an open memory episode only.
    MemoryCount,
    /// An OOM kill: closes the memory episode (opens one if none is open).
    OomKill,
    /// Opens or extends a reset burst; counted into an open memory episode.
    Network,
    /// Counted into an open reset burst or memory episode only: drops the
    /// kernel gives no reason for (`NOT_SPECIFIED`, most frees on older
    /// kernels, a namespace's teardown among them) say nothing by themselves.
    NetworkCount,
    /// Not counted anywhere (sampled `net.drop`, empty summaries).
    Ignored,
}

/// The record kinds that become child spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChildKind {
    Gc,
    Assist,
    Throttle,
    Reclaim,
    OomKill,
    TcpReset,
}

impl ChildKind {
    pub(crate) const ALL: usize = 6;

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The record kind, as in `Record`'s `kind`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ChildKind::Gc => "go.gc",
            ChildKind::Assist => "go.assist",
            ChildKind::Throttle => "memcg.throttle",
            ChildKind::Reclaim => "memcg.reclaim",
            ChildKind::OomKill => "memcg.oom_kill",
            ChildKind::TcpReset => "tcp.reset",
        }
    }

    /// The unit of a folded aggregate's value: the interval's length for
    /// interval kinds, 1 per record for instants.
    pub(crate) fn unit(self) -> &'static str {
        match self {
            ChildKind::OomKill | ChildKind::TcpReset => "1",
            _ => "ns",
        }
    }

    /// The value a folded aggregate sums: `end - start` (0 when the record
    /// carries no duration) or 1.
    pub(crate) fn value(self, start: u64, end: u64) -> u64 {
        match self {
            ChildKind::OomKill | ChildKind::TcpReset => 1,
            _ => end - start,
        }
    }
}

/// One record, classified.
#[derive(Clone, Debug)]
pub(crate) struct Class {
    pub role: Role,
    pub child: Option<ChildKind>,
    /// The record's interval (start == end for instants); `end` is never
    /// before `start`.
    pub start: u64,
    pub end: u64,
    pub limits: Option<MemcgLimits>,
    /// A per-second drop summary: it counts what happened up to a tick
    /// before its own time, so it neither moves an episode's end nor keeps
    /// it open.
    pub summary: bool,
}

/// **Go GC pressure**: a `go.gc` cycle whose heap goal was capped by the
/// memory limit (`GOMEMLIMIT`). A limit is set (`memory_limit_bytes` <
/// `math.MaxInt64`) and the goal is below what GOGC alone gives,
/// `heap_goal_bytes < heap_marked_bytes × (1 + GOGC/100)` (the runtime's
/// GOGC goal also adds stacks and globals, so an uncapped goal is never
/// below it); with GOGC off (-1) and a limit set, the limit is the only goal,
/// so every cycle counts. A cycle without these figures (a stripped binary)
/// is not pressure.
pub(crate) fn gc_pressure(gc: &GoGc) -> bool {
    let (Some(limit), Some(goal), Some(marked), Some(gogc)) =
        (gc.memory_limit_bytes, gc.heap_goal_bytes, gc.heap_marked_bytes, gc.gogc)
    else {
        return false;
    };
    if limit == i64::MAX {
        return false;
    }
    if gogc < 0 {
        return true;
    }
    // goal × 100 < marked × (100 + gogc), exactly, in u128.
    u128::from(goal) * 100 < u128::from(marked) * (100 + gogc as u128)
}

/// `end - duration ..= end`, for records stamped at their end.
fn ending_at(end: u64, duration_ns: Option<u64>) -> (u64, u64) {
    (end.saturating_sub(duration_ns.unwrap_or(0)), end)
}

pub(crate) fn classify(r: &Record) -> Class {
    let t = r.time_unix_nano;
    let mut c = Class { role: Role::MemoryCount, child: None, start: t, end: t, limits: None, summary: false };
    match &r.event {
        Event::MemcgEvents(e) => {
            let d = &e.delta;
            if d.high > 0 || d.max > 0 || d.low > 0 || d.oom > 0 || d.oom_kill > 0 || d.oom_group_kill > Some(0) {
                c.role = Role::Pressure;
            }
            c.limits = Some(e.limits);
        }
        Event::MemcgOomKill(_) => {
            c.role = Role::OomKill;
            c.child = Some(ChildKind::OomKill);
        }
        Event::MemcgThrottle(e) => {
            c.role = Role::Pressure;
            c.child = Some(ChildKind::Throttle);
            (c.start, c.end) = ending_at(t, e.duration_ns);
            c.limits = Some(e.limits);
        }
        // Calls with nothing to do: no sign of pressure, nothing to count.
        Event::MemcgThrottleIdle(_) => c.role = Role::Ignored,
        Event::MemcgReclaim(e) => {
            c.role = Role::Pressure;
            c.child = Some(ChildKind::Reclaim);
            (c.start, c.end) = ending_at(t, e.duration_ns);
            c.limits = Some(e.limits);
        }
        Event::MemcgReclaimStat(e) => {
            if e.delta != Default::default() {
                c.role = Role::Pressure;
            }
            c.limits = Some(e.limits);
        }
        Event::MemcgPressure(e) => {
            // The read at stop finds whatever little stalled since the last
            // trigger: it counts into an open episode, it opens none.
            if e.some_delta_us > 0 && !e.at_stop {
                c.role = Role::Pressure;
            }
            c.limits = Some(e.limits);
        }
        Event::GoGc(g) => {
            if gc_pressure(g) {
                c.role = Role::Pressure;
            }
            c.child = Some(ChildKind::Gc);
            let end = g.end_unix_nano.unwrap_or(t);
            c.start = g.start_unix_nano.unwrap_or(end).min(end);
            c.end = end;
        }
        Event::GoAssist(a) => {
            c.role = Role::Extends;
            c.child = Some(ChildKind::Assist);
            (c.start, c.end) = ending_at(t, a.duration_ns);
        }
        Event::GoHeapGrow(_) | Event::GoScavenge(_) | Event::GoScavengeSummary(_) => {}
        // Says what the process is, not what happens to it.
        Event::GoAttach(_) => c.role = Role::Ignored,
        Event::TcpReset(_) => {
            c.role = Role::Network;
            c.child = Some(ChildKind::TcpReset);
        }
        Event::TcpRetransmit(_) => c.role = Role::Network,
        Event::NetDropSummary(s) => {
            c.role = match (s.count, s.reason.as_str()) {
                (0, _) => Role::Ignored,
                (_, "NOT_SPECIFIED") => Role::NetworkCount,
                _ => Role::Network,
            };
            c.summary = true;
        }
        Event::NetDrop(_) => c.role = Role::Ignored,
    }
    c
}

/// Adds what `r` counts (see `Signal`) to `counts`. Zero rises add nothing,
/// so a signal absent from `counts` is 0.
pub(crate) fn count(r: &Record, counts: &mut std::collections::BTreeMap<Signal, u64>) {
    let mut add = |s: Signal, n: u64| {
        if n > 0 {
            *counts.entry(s).or_insert(0) += n;
        }
    };
    match &r.event {
        Event::MemcgEvents(e) => {
            let d = &e.delta;
            add(Signal::MemoryEvents("high"), d.high);
            add(Signal::MemoryEvents("max"), d.max);
            add(Signal::MemoryEvents("low"), d.low);
            add(Signal::MemoryEvents("oom"), d.oom);
            add(Signal::MemoryEvents("oom_kill"), d.oom_kill);
            add(Signal::MemoryEvents("oom_group_kill"), d.oom_group_kill.unwrap_or(0));
        }
        Event::MemcgOomKill(_) => add(Signal::OomKill, 1),
        Event::MemcgThrottle(_) => add(Signal::Throttle, 1),
        Event::MemcgThrottleIdle(_) => {}
        Event::MemcgReclaim(_) => add(Signal::Reclaim, 1),
        // One per rise: the `stat` mechanism's unit of reclaim (pages would
        // not compare with the tracepoints' runs).
        Event::MemcgReclaimStat(e) => add(Signal::Reclaim, u64::from(e.delta != Default::default())),
        Event::MemcgPressure(e) => {
            add(Signal::PressureStallUs("some"), e.some_delta_us);
            add(Signal::PressureStallUs("full"), e.full_delta_us);
        }
        Event::GoGc(_) => add(Signal::GcCycle, 1),
        Event::GoAssist(_) => add(Signal::GcAssist, 1),
        Event::GoHeapGrow(h) => add(Signal::HeapGrowBytes, h.bytes),
        // Every call is in one of the two: a large one (or one the kernel's
        // table had no room for) as an event, the others in a summary.
        Event::GoScavenge(h) => add(Signal::ScavengeBytes, h.bytes),
        Event::GoScavengeSummary(s) => add(Signal::ScavengeBytes, s.bytes),
        Event::GoAttach(_) => {}
        Event::TcpReset(r) => add(
            Signal::TcpReset(match r.direction {
                Direction::Sent => "sent",
                Direction::Received => "received",
            }),
            1,
        ),
        // A failed attempt (`err`) sent nothing: the kernel does not count it.
        Event::TcpRetransmit(r) if r.err.is_none_or(|e| e == 0) => add(Signal::RetransmitSegments, u64::from(r.segs)),
        Event::TcpRetransmit(_) => {}
        Event::NetDropSummary(s) => add(Signal::NetDrop(s.reason.clone()), s.count),
        Event::NetDrop(_) => {}
    }
}
