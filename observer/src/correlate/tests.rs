//! The engine's rules on synthetic records.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use super::{episode::Signal, rules::gc_pressure, *};
use crate::{
    event::*,
    workload::{Attributed, Identity, WorkloadKey},
};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
/// A Unix time in ns to start from.
const T0: u64 = 1_800_000_000 * S;
/// Records are processed once this far behind `now` (the default window).
const W: u64 = 2 * S;

const A: WorkloadKey = WorkloadKey::Cgroup { cgroup_id: 100 };
const B: WorkloadKey = WorkloadKey::Cgroup { cgroup_id: 200 };

fn at(key: WorkloadKey, t: u64, event: Event) -> Attributed {
    let identity = Arc::new(Identity { service_name: format!("{key:?}"), ..Default::default() });
    Attributed { key, identity, record: Record { time: String::new(), time_unix_nano: t, event } }
}

fn limits(high: u64) -> MemcgLimits {
    MemcgLimits { memory_current: Some(high / 2), memory_high: Some(high), memory_max: None }
}

fn events(delta: MemoryEventCounts, high_limit: u64) -> Event {
    Event::MemcgEvents(MemcgEvents {
        mechanism: "inotify",
        delta,
        total: delta,
        limits: limits(high_limit),
        who: Attribution::default(),
    })
}

fn high(n: u64) -> Event {
    events(MemoryEventCounts { high: n, ..Default::default() }, 64 << 20)
}

fn throttle(duration_ns: u64) -> Event {
    Event::MemcgThrottle(MemcgThrottle {
        mechanism: "fentry",
        inferred: false,
        duration_ns: Some(duration_ns),
        nr_pages: Some(32),
        limits: limits(64 << 20),
        who: Attribution::default(),
    })
}

fn oom_kill() -> Event {
    Event::MemcgOomKill(MemcgOomKill {
        comm_source: Some("record"),
        trigger_pid: 42,
        trigger_comm: "fixture".into(),
        total_vm_kb: None,
        anon_rss_kb: None,
        who: Attribution { pid: Some(42), ..Default::default() },
    })
}

fn psi(some_delta_us: u64, full_delta_us: u64) -> Event {
    Event::MemcgPressure(MemcgPressure {
        mechanism: "trigger",
        some_total_us: some_delta_us,
        full_total_us: full_delta_us,
        some_delta_us,
        full_delta_us,
        some_avg10: 0.0,
        full_avg10: 0.0,
        at_stop: false,
        limits: limits(64 << 20),
        who: Attribution::default(),
    })
}

fn owner() -> GoOwner {
    GoOwner { go_version: Some("go1.26.0".into()), go_module: None, who: Attribution::default() }
}

/// A GC cycle `[start, end]` with GOGC 100; `limit` None = no GOMEMLIMIT.
fn gc(start: u64, end: u64, marked: u64, goal: u64, limit: Option<i64>) -> Event {
    gc_with(start, end, marked, goal, 100, limit)
}

fn gc_with(start: u64, end: u64, marked: u64, goal: u64, gogc: i32, limit: Option<i64>) -> Event {
    Event::GoGc(GoGc {
        cycle: Some(1),
        start_time: None,
        start_unix_nano: Some(start),
        end_time: None,
        end_unix_nano: Some(end),
        sweep_termination_ns: None,
        mark_ns: None,
        mark_termination_ns: None,
        heap_start_bytes: Some(goal),
        heap_end_bytes: Some(goal),
        heap_marked_bytes: Some(marked),
        heap_goal_bytes: Some(goal),
        gogc: Some(gogc),
        memory_limit_bytes: Some(limit.unwrap_or(i64::MAX)),
        cycles_unseen: None,
        owner: owner(),
    })
}

/// A cycle that is not GC pressure (no limit), ending at `t`.
fn plain_gc(t: u64) -> Event {
    gc(t - MS, t, 10 << 20, 20 << 20, None)
}

fn assist(duration_ns: u64) -> Event {
    Event::GoAssist(GoAssist { duration_ns: Some(duration_ns), goroutine: "0xc000".into(), tid: 1, owner: owner() })
}

fn heap_grow(bytes: u64) -> Event {
    Event::GoHeapGrow(GoHeapChange { bytes, tid: 1, owner: owner() })
}

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn reset(direction: Direction) -> Event {
    Event::TcpReset(TcpReset {
        direction,
        family: "ipv4",
        local_addr: LO,
        local_port: 9,
        remote_addr: LO,
        remote_port: 5000,
        state: Some("TCP_CLOSE"),
        reason: Some("NO_SOCKET".into()),
        netns: 1,
        who: Attribution::default(),
    })
}

fn retransmit(segs: u32) -> Event {
    Event::TcpRetransmit(TcpRetransmit {
        family: "ipv4",
        local_addr: LO,
        local_port: 9,
        remote_addr: LO,
        remote_port: 5000,
        state: Some("TCP_ESTABLISHED"),
        segs,
        gso_segs: segs,
        err: None,
        netns: 1,
        netns_owner: None,
        who: Attribution::default(),
    })
}

fn drop_summary(reason: &str, count: u64) -> Event {
    Event::NetDropSummary(NetDropSummary {
        netns: 1,
        netns_owner: None,
        reason: reason.into(),
        reason_code: Some(2),
        reason_source: "kernel",
        location: None,
        flags_class: "rst",
        count,
        total: count,
    })
}

fn net_drop(reason: &str) -> Event {
    Event::NetDrop(NetDrop {
        reason: reason.into(),
        reason_code: Some(2),
        reason_source: "kernel",
        location: None,
        family: "ipv4",
        tcp_flags: Some(vec!["RST"]),
        flags_class: "rst",
        src_addr: Some(LO),
        src_port: Some(1),
        dst_addr: Some(LO),
        dst_port: Some(2),
        netns: 1,
        netns_owner: None,
        who: Attribution::default(),
    })
}

fn engine(rules: Rules) -> Engine {
    Engine::new(rules, 0x5eed)
}

fn count(e: &Episode, s: Signal) -> u64 {
    e.counts.get(&s).copied().unwrap_or(0)
}

fn child_kinds(e: &Episode) -> Vec<&'static str> {
    e.children.iter().map(|c| kind_of(&c.record)).collect()
}

fn kind_of(r: &Record) -> &'static str {
    match &r.event {
        Event::GoGc(_) => "go.gc",
        Event::GoAssist(_) => "go.assist",
        Event::MemcgThrottle(_) => "memcg.throttle",
        Event::MemcgReclaim(_) => "memcg.reclaim",
        Event::MemcgOomKill(_) => "memcg.oom_kill",
        Event::TcpReset(_) => "tcp.reset",
        _ => "other",
    }
}

#[test]
fn opens_at_pressure_and_closes_after_quiet() {
    let mut e = engine(Rules::default());
    e.push(at(A, T0, high(2)));
    e.push(at(A, T0 + S, throttle(100 * MS)));
    e.push(at(A, T0 + 2 * S, plain_gc(T0 + 2 * S)));
    // The last signal is at T0+1s: quiet until T0+6s, processed once 2 s old.
    assert!(e.advance(T0 + 6 * S + W - 1).is_empty());
    assert_eq!(e.stats().open, 1);
    let out = e.advance(T0 + 6 * S + W);
    assert_eq!(out.len(), 1);
    let ep = &out[0];
    assert_eq!(ep.kind, EpisodeKind::MemoryPressure);
    assert_eq!(ep.closed_by, CloseReason::Quiet);
    assert_eq!(ep.workload.service_name, format!("{A:?}"));
    assert_eq!((ep.start_unix_nano, ep.end_unix_nano), (T0, T0 + 2 * S));
    assert_eq!(count(ep, Signal::MemoryEvents("high")), 2);
    assert_eq!(count(ep, Signal::Throttle), 1);
    assert_eq!(count(ep, Signal::GcCycle), 1);
    assert_eq!(child_kinds(ep), ["memcg.throttle", "go.gc"]);
    assert_eq!((ep.children[0].start_unix_nano, ep.children[0].end_unix_nano), (T0 + S - 100 * MS, T0 + S));
    assert_eq!(ep.limits_at_open.and_then(|l| l.memory_high), Some(64 << 20));
    assert!(ep.previous.is_none());
    assert_ne!(ep.root.trace_id, [0; 16]);
    let s = e.stats();
    assert_eq!((s.records, s.opened, s.closed, s.open, s.late), (3, 1, 1, 0, 0));
}

/// A Go process's settings reach its identity at the tick after its
/// attach, after its first records were attributed: the episode names
/// the workload as last known.
#[test]
fn the_episode_takes_the_workloads_newest_identity() {
    let mut e = engine(Rules::default());
    e.push(at(A, T0, high(1)));
    let mut later = at(A, T0 + S, plain_gc(T0 + S));
    let env = crate::process::environ::GoEnv { env_gomemlimit: Some("40MiB".into()), ..Default::default() };
    later.identity = Arc::new(Identity { go_env: Some(env.clone()), ..Identity::clone(&later.identity) });
    e.push(later);
    let out = e.finish(T0 + 2 * S);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].workload.go_env, Some(env));
    assert_eq!(out[0].workload.service_name, format!("{A:?}"));
}

#[test]
fn limits_at_open_and_at_close_are_the_first_and_last() {
    let mut e = engine(Rules::default());
    e.push(at(A, T0, events(MemoryEventCounts { high: 1, ..Default::default() }, 100)));
    e.push(at(A, T0 + S, heap_grow(4 << 20)));
    e.push(at(A, T0 + 2 * S, events(MemoryEventCounts { max: 1, ..Default::default() }, 200)));
    let out = e.finish(T0 + 3 * S);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].closed_by, CloseReason::Shutdown);
    assert_eq!(out[0].limits_at_open.and_then(|l| l.memory_high), Some(100));
    assert_eq!(out[0].limits_at_close.and_then(|l| l.memory_high), Some(200));
    assert_eq!(count(&out[0], Signal::HeapGrowBytes), 4 << 20);
    assert_eq!(count(&out[0], Signal::MemoryEvents("max")), 1);
}

/// Scavenging counts from both its records (each call is in exactly one):
/// the large calls' events and the kernel's summaries of the others. Neither
/// opens an episode; nor does `go.attach`, which counts nothing.
#[test]
fn scavenge_events_and_summaries_both_count() {
    let scavenge = |bytes| Event::GoScavenge(GoHeapChange { bytes, tid: 1, owner: owner() });
    let summary = |calls, bytes| {
        Event::GoScavengeSummary(GoScavengeSummary {
            calls,
            bytes,
            total_calls: calls,
            total_bytes: bytes,
            owner: owner(),
        })
    };
    let attach = Event::GoAttach(GoAttach {
        executable: None,
        layout: "dwarf",
        probes: 6,
        alloc_sampling: "memprofile",
        mappings: None,
        watched_from: "exec",
        cycles_at_attach: None,
        env: Default::default(),
        owner: owner(),
    });
    let mut e = engine(Rules::default());
    e.push(at(A, T0, summary(10, 640 << 10)));
    e.push(at(A, T0, scavenge(4 << 20)));
    e.push(at(A, T0, attach));
    assert!(e.advance(T0 + 60 * S).is_empty());
    assert_eq!(e.stats().opened, 0);

    let t1 = T0 + 100 * S;
    e.push(at(A, t1, high(1)));
    e.push(at(A, t1 + S, scavenge(2 << 20)));
    e.push(at(A, t1 + 2 * S, summary(240, 240 << 16)));
    let out = e.advance(t1 + 10 * S + W);
    assert_eq!(out.len(), 1);
    assert_eq!(count(&out[0], Signal::ScavengeBytes), (2 << 20) + (240 << 16));
    // Counted, not kept open by them: closes quiet after the rise.
    assert_eq!(out[0].closed_by, CloseReason::Quiet);
}

#[test]
fn plain_gc_and_heap_records_neither_open_nor_extend() {
    let mut e = engine(Rules::default());
    e.push(at(A, T0, plain_gc(T0)));
    e.push(at(A, T0, heap_grow(1 << 22)));
    e.push(at(A, T0, events(MemoryEventCounts::default(), 1)));
    e.push(at(A, T0, psi(0, 0)));
    assert!(e.advance(T0 + 60 * S).is_empty());
    assert_eq!(e.stats().opened, 0);

    let t1 = T0 + 100 * S;
    e.push(at(A, t1, psi(500, 100)));
    for i in 1..=4 {
        e.push(at(A, t1 + i * S, plain_gc(t1 + i * S)));
    }
    // Calls of the throttle function with nothing to do: ignored.
    let idle = MemcgThrottleIdle { mechanism: "fentry", count: 9, total: 9, who: Attribution::default() };
    e.push(at(A, t1 + 4 * S + 500 * MS, Event::MemcgThrottleIdle(idle)));
    // Closes 5 s after the PSI rise, not after the last plain cycle.
    let out = e.advance(t1 + 5 * S + W);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].closed_by, CloseReason::Quiet);
    assert_eq!(out[0].end_unix_nano, t1 + 4 * S);
    assert_eq!(count(&out[0], Signal::GcCycle), 4);
    assert_eq!(count(&out[0], Signal::PressureStallUs("some")), 500);
    assert_eq!(count(&out[0], Signal::PressureStallUs("full")), 100);
}

#[test]
fn assists_only_extend_an_open_episode() {
    let mut e = engine(Rules::default());
    e.push(at(A, T0, assist(MS)));
    assert!(e.advance(T0 + 60 * S).is_empty());
    assert_eq!(e.stats().opened, 0);

    let t1 = T0 + 100 * S;
    e.push(at(A, t1, throttle(MS)));
    e.push(at(A, t1 + 4 * S, assist(2 * MS)));
    assert!(e.advance(t1 + 9 * S + W - 1).is_empty());
    let out = e.advance(t1 + 9 * S + W);
    assert_eq!(out.len(), 1);
    assert_eq!(count(&out[0], Signal::GcAssist), 1);
    assert_eq!(child_kinds(&out[0]), ["memcg.throttle", "go.assist"]);
}

#[test]
fn max_length_closes_and_the_next_episode_links_to_it() {
    let rules = Rules { max_length: Duration::from_secs(20), ..Default::default() };
    let mut e = engine(rules);
    let mut out = Vec::new();
    for i in 0..=30 {
        e.push(at(A, T0 + i * S, high(1)));
        out.extend(e.advance(T0 + i * S));
    }
    out.extend(e.advance(T0 + 60 * S));
    assert_eq!(out.len(), 2);
    let (first, second) = (&out[0], &out[1]);
    assert_eq!(first.closed_by, CloseReason::MaxLength);
    assert_eq!((first.start_unix_nano, first.end_unix_nano), (T0, T0 + 19 * S));
    assert_eq!(count(first, Signal::MemoryEvents("high")), 20);
    assert!(first.previous.is_none());
    assert_eq!(second.closed_by, CloseReason::Quiet);
    assert_eq!(second.previous, Some(first.root));
    assert_eq!((second.start_unix_nano, second.end_unix_nano), (T0 + 20 * S, T0 + 30 * S));
    assert_eq!(count(second, Signal::MemoryEvents("high")), 11);
    assert_ne!(first.root.trace_id, second.root.trace_id);

    // A max-length episode followed by silence longer than quiet: no link.
    let t1 = T0 + 1000 * S;
    for i in 0..=20 {
        e.push(at(A, t1 + i * S, high(1)));
    }
    let out = e.advance(t1 + 40 * S);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].closed_by, CloseReason::MaxLength);
    assert_eq!(out[1].previous, Some(out[0].root));
    e.push(at(A, t1 + 100 * S, high(1)));
    let out = e.finish(t1 + 101 * S);
    assert_eq!(out.len(), 1);
    assert!(out[0].previous.is_none());
}

#[test]
fn oom_kill_closes_the_episode_as_its_last_child() {
    let mut e = engine(Rules::default());
    e.push(at(A, T0, high(3)));
    e.push(at(A, T0 + S, throttle(10 * MS)));
    e.push(at(A, T0 + 2 * S, oom_kill()));
    // The kill's own memory.events rise, read after it: counted in, no new episode.
    let aftermath = MemoryEventCounts { oom: 1, oom_kill: 1, high: 1, ..Default::default() };
    e.push(at(A, T0 + 2 * S + 5 * MS, events(aftermath, 64 << 20)));
    // Resets of the dying process: their own burst.
    e.push(at(A, T0 + 2 * S + 10 * MS, reset(Direction::Sent)));
    let out = e.advance(T0 + 2 * S + W + OOM_LINGER.as_nanos() as u64);
    assert_eq!(out.len(), 1, "{out:?}");
    let ep = &out[0];
    assert_eq!(ep.closed_by, CloseReason::OomKill);
    assert_eq!(ep.end_unix_nano, T0 + 2 * S);
    assert_eq!(child_kinds(ep), ["memcg.throttle", "memcg.oom_kill"]);
    assert_eq!(count(ep, Signal::OomKill), 1);
    assert_eq!(count(ep, Signal::MemoryEvents("oom_kill")), 1);
    assert_eq!(count(ep, Signal::MemoryEvents("high")), 4);
    assert_eq!(count(ep, Signal::TcpReset("sent")), 0);
    let out = e.finish(T0 + 100 * S);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, EpisodeKind::TcpResetBurst);
    assert_eq!(out[0].closed_by, CloseReason::Quiet);
    assert_eq!(count(&out[0], Signal::TcpReset("sent")), 1);
}

#[test]
fn oom_kill_without_an_open_episode_is_one() {
    let mut e = engine(Rules::default());
    e.push(at(A, T0, oom_kill()));
    let out = e.advance(T0 + W + OOM_LINGER.as_nanos() as u64);
    assert_eq!(out.len(), 1);
    let ep = &out[0];
    assert_eq!((ep.kind, ep.closed_by), (EpisodeKind::MemoryPressure, CloseReason::OomKill));
    assert_eq!((ep.start_unix_nano, ep.end_unix_nano), (T0, T0));
    assert_eq!(child_kinds(ep), ["memcg.oom_kill"]);
    assert_eq!(count(ep, Signal::OomKill), 1);
    // A later signal opens a new episode, not linked.
    e.push(at(A, T0 + 10 * S, high(1)));
    let out = e.finish(T0 + 11 * S);
    assert_eq!(out.len(), 1);
    assert!(out[0].previous.is_none());
    // Stopping while an OOM-killed episode takes its aftermath: still OomKill.
    let mut e = engine(Rules::default());
    e.push(at(A, T0, oom_kill()));
    assert_eq!(e.finish(T0)[0].closed_by, CloseReason::OomKill);
}

#[test]
fn records_older_than_a_handed_out_episode_are_late() {
    let mut e = engine(Rules::default());
    e.push(at(A, T0, high(1)));
    e.push(at(A, T0 + 3 * S, high(1)));
    let out = e.advance(T0 + 20 * S);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].end_unix_nano, T0 + 3 * S);
    // Before the end of the episode handed out: late, dropped.
    e.push(at(A, T0 + 2 * S, high(1)));
    // After its end, although the clock is past it: placed (a new episode).
    e.push(at(A, T0 + 4 * S, high(1)));
    // Another workload at the same time is not late.
    e.push(at(B, T0 + 2 * S, high(1)));
    let out = e.advance(T0 + 21 * S);
    assert_eq!(e.stats().late, 1);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|ep| count(ep, Signal::MemoryEvents("high")) == 1));
    // Older than what the engine remembers (max_length + quiet behind): late.
    e.push(at(B, T0 + 30 * S, high(1)));
    assert_eq!(e.advance(T0 + 30 * S + W + 305 * S + 1).len(), 1);
    // (a workload with no episode at all: only the horizon makes it late)
    e.push(at(WorkloadKey::Cgroup { cgroup_id: 300 }, T0 + 29 * S, high(1)));
    assert!(e.finish(T0 + 1000 * S).is_empty());
    assert_eq!(e.stats().late, 2);
}

#[test]
fn the_reorder_window_puts_records_in_time_order() {
    let mut e = engine(Rules::default());
    // Pushed out of order: in time order they are one episode (gaps of 4 s
    // and 3 s); in push order T0 and T0+7s would be 7 s apart.
    e.push(at(A, T0 + 7 * S, throttle(MS)));
    e.push(at(A, T0, throttle(MS)));
    e.push(at(A, T0 + 4 * S, throttle(MS)));
    e.push(at(A, T0 + 5 * S, reset(Direction::Received)));
    assert!(e.advance(T0 + 9 * S).is_empty());
    let out = e.advance(T0 + 12 * S + W);
    assert_eq!(out.len(), 1);
    let ends: Vec<u64> = out[0].children.iter().map(|c| c.end_unix_nano).collect();
    assert_eq!(ends, [T0, T0 + 4 * S, T0 + 5 * S, T0 + 7 * S]);
    assert_eq!(out[0].start_unix_nano, T0 - MS);
    assert_eq!(count(&out[0], Signal::Throttle), 3);
    assert_eq!(count(&out[0], Signal::TcpReset("received")), 1);
    assert_eq!(e.stats().late, 0);
    assert_eq!(e.stats().forced, 0);
}

#[test]
fn past_the_span_budget_records_fold_with_exact_counts() {
    let rules = Rules { span_budget: 3, ..Default::default() };
    let mut e = engine(rules);
    for i in 1..=10 {
        e.push(at(A, T0 + i * 100 * MS, throttle(i * MS)));
    }
    e.push(at(A, T0 + 2 * S, reset(Direction::Sent)));
    e.push(at(A, T0 + 2 * S, reset(Direction::Received)));
    let out = e.finish(T0 + 10 * S);
    assert_eq!(out.len(), 1);
    let ep = &out[0];
    assert_eq!(child_kinds(ep), ["memcg.throttle", "memcg.throttle", "memcg.throttle", "tcp.reset", "tcp.reset"]);
    assert_eq!(ep.folded.len(), 1);
    let f = &ep.folded[0];
    assert_eq!((f.kind, f.unit), ("memcg.throttle", "ns"));
    assert_eq!((f.count, f.sum, f.min, f.max), (7, (4..=10).sum::<u64>() * MS, 4 * MS, 10 * MS));
    assert_eq!((f.start_unix_nano, f.end_unix_nano), (T0 + 400 * MS - 4 * MS, T0 + S));
    let spans = ep.children.iter().filter(|c| kind_of(&c.record) == "memcg.throttle").count() as u64;
    assert_eq!(count(ep, Signal::Throttle), 10);
    assert_eq!(spans + f.count, count(ep, Signal::Throttle));

    // Budget 0: every one folds; instants count 1 each.
    let mut e = engine(Rules { span_budget: 0, ..Default::default() });
    e.push(at(A, T0, reset(Direction::Sent)));
    e.push(at(A, T0 + S, reset(Direction::Sent)));
    let out = e.finish(T0 + 2 * S);
    assert!(out[0].children.is_empty());
    let f = &out[0].folded[0];
    assert_eq!((f.kind, f.unit, f.count, f.sum, f.min, f.max), ("tcp.reset", "1", 2, 2, 1, 1));
}

#[test]
fn max_open_caps_new_episodes() {
    let mut e = engine(Rules { max_open: 2, ..Default::default() });
    for cgroup_id in 1..=3 {
        e.push(at(WorkloadKey::Cgroup { cgroup_id }, T0, high(1)));
    }
    e.push(at(WorkloadKey::Cgroup { cgroup_id: 1 }, T0 + S, high(1)));
    e.advance(T0 + S + W);
    let s = e.stats();
    assert_eq!((s.opened, s.open, s.capped), (2, 2, 1));
    let out = e.finish(T0 + 2 * S);
    assert_eq!(out.len(), 2);
    assert_eq!(e.stats().open, 0);
}

#[test]
fn max_pending_processes_the_oldest_early() {
    let mut e = engine(Rules { max_pending: 3, ..Default::default() });
    for i in [4, 0, 3, 1, 2] {
        e.push(at(A, T0 + i * S, throttle(MS)));
    }
    let s = e.stats();
    assert_eq!((s.records, s.forced, s.opened), (5, 2, 1));
    // The two processed early were the oldest then (T0, T0+1s), so
    // nothing is late and the episode holds all five in order.
    let out = e.finish(T0 + 10 * S);
    assert_eq!(out.len(), 1);
    let ends: Vec<u64> = out[0].children.iter().map(|c| c.end_unix_nano).collect();
    assert_eq!(ends, [T0, T0 + S, T0 + 2 * S, T0 + 3 * S, T0 + 4 * S]);
    assert_eq!(e.stats().late, 0);
}

#[test]
fn resets_burst_outside_a_memory_episode_and_are_children_inside_one() {
    let mut e = engine(Rules::default());
    // A: resets only.
    e.push(at(A, T0, reset(Direction::Sent)));
    e.push(at(A, T0 + S, retransmit(3)));
    e.push(at(A, T0 + 2 * S, reset(Direction::Received)));
    // B: under memory pressure.
    e.push(at(B, T0, high(1)));
    e.push(at(B, T0 + S, reset(Direction::Sent)));
    e.push(at(B, T0 + S, retransmit(2)));
    let mut out = e.advance(T0 + 30 * S);
    out.sort_by_key(|ep| ep.kind);
    assert_eq!(out.len(), 2);
    let (memory, burst) = (&out[0], &out[1]);
    assert_eq!(memory.kind, EpisodeKind::MemoryPressure);
    assert_eq!(memory.workload.service_name, format!("{B:?}"));
    assert_eq!(count(memory, Signal::TcpReset("sent")), 1);
    assert_eq!(count(memory, Signal::RetransmitSegments), 2);
    assert_eq!(child_kinds(memory), ["tcp.reset"]);
    // Network records do not keep a memory episode open.
    assert_eq!(memory.end_unix_nano, T0 + S);
    assert_eq!(burst.kind, EpisodeKind::TcpResetBurst);
    assert_eq!(burst.workload.service_name, format!("{A:?}"));
    assert_eq!((burst.start_unix_nano, burst.end_unix_nano), (T0, T0 + 2 * S));
    assert_eq!(count(burst, Signal::TcpReset("sent")), 1);
    assert_eq!(count(burst, Signal::TcpReset("received")), 1);
    assert_eq!(count(burst, Signal::RetransmitSegments), 3);
    assert_eq!(child_kinds(burst), ["tcp.reset", "tcp.reset"]);
    assert_eq!(burst.closed_by, CloseReason::Quiet);
}

#[test]
fn a_burst_open_when_memory_pressure_starts_gets_no_more_records() {
    let mut e = engine(Rules::default());
    e.push(at(A, T0, reset(Direction::Sent)));
    e.push(at(A, T0 + S, high(1)));
    for i in 2..=4 {
        e.push(at(A, T0 + i * S, reset(Direction::Sent)));
    }
    let mut out = e.finish(T0 + 30 * S);
    out.sort_by_key(|ep| ep.kind);
    assert_eq!(out.len(), 2);
    assert_eq!(count(&out[0], Signal::TcpReset("sent")), 3);
    assert_eq!(out[1].kind, EpisodeKind::TcpResetBurst);
    assert_eq!(out[1].closed_by, CloseReason::Quiet);
    assert_eq!(count(&out[1], Signal::TcpReset("sent")), 1);
}

#[test]
fn gc_pressure_is_a_goal_capped_by_the_memory_limit() {
    let as_gc = |e: Event| match e {
        Event::GoGc(g) => g,
        _ => unreachable!(),
    };
    let mib = 1 << 20;
    let limit = Some(64 * mib as i64);
    // GOGC 100, 40 MiB marked: the GOGC goal is at least 80 MiB.
    assert!(gc_pressure(&as_gc(gc(0, 1, 40 * mib, 60 * mib, limit))));
    assert!(!gc_pressure(&as_gc(gc(0, 1, 40 * mib, 80 * mib, limit))));
    assert!(!gc_pressure(&as_gc(gc(0, 1, 40 * mib, 84 * mib, limit))));
    // The same goal without a limit is not pressure.
    assert!(!gc_pressure(&as_gc(gc(0, 1, 40 * mib, 60 * mib, None))));
    // GOGC 50: the GOGC goal is 60 MiB.
    assert!(gc_pressure(&as_gc(gc_with(0, 1, 40 * mib, 59 * mib, 50, limit))));
    assert!(!gc_pressure(&as_gc(gc_with(0, 1, 40 * mib, 60 * mib, 50, limit))));
    // GOGC off: every cycle is the limit's when one is set.
    assert!(gc_pressure(&as_gc(gc_with(0, 1, 40 * mib, 200 * mib, -1, limit))));
    assert!(!gc_pressure(&as_gc(gc_with(0, 1, 40 * mib, 200 * mib, -1, None))));
    // A cycle without figures (stripped binary) is not pressure.
    let mut bare = as_gc(gc(0, 1, 40 * mib, 60 * mib, limit));
    bare.heap_goal_bytes = None;
    assert!(!gc_pressure(&bare));

    // In the engine: a capped cycle opens an episode, its child spans the cycle.
    let mut e = engine(Rules::default());
    e.push(at(A, T0, gc(T0 - 30 * MS, T0 - 10 * MS, 40 * mib, 80 * mib, limit)));
    assert!(e.advance(T0 + 60 * S).is_empty());
    e.push(at(A, T0 + 61 * S, gc(T0 + 60 * S, T0 + 61 * S - MS, 40 * mib, 60 * mib, limit)));
    let out = e.finish(T0 + 62 * S);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].start_unix_nano, T0 + 60 * S);
    assert_eq!(out[0].end_unix_nano, T0 + 61 * S);
    assert_eq!((out[0].children[0].start_unix_nano, out[0].children[0].end_unix_nano), (T0 + 60 * S, T0 + 61 * S - MS));
    assert_eq!(count(&out[0], Signal::GcCycle), 1);
}

#[test]
fn drops_are_counted_exactly_from_summaries() {
    let mut e = engine(Rules::default());
    e.push(at(A, T0, drop_summary("NO_SOCKET", 5)));
    // Sampled events of the same drops: not counted again, no children.
    for _ in 0..4 {
        e.push(at(A, T0, net_drop("NO_SOCKET")));
    }
    e.push(at(A, T0 + S, drop_summary("NO_SOCKET", 7)));
    e.push(at(A, T0 + S, drop_summary("NETFILTER_DROP", 3)));
    e.push(at(A, T0 + 2 * S, drop_summary("NETFILTER_DROP", 0)));
    let out = e.finish(T0 + 30 * S);
    assert_eq!(out.len(), 1);
    let ep = &out[0];
    assert_eq!(ep.kind, EpisodeKind::TcpResetBurst);
    assert_eq!(count(ep, Signal::NetDrop("NO_SOCKET".into())), 12);
    assert_eq!(count(ep, Signal::NetDrop("NETFILTER_DROP".into())), 3);
    assert_eq!(ep.counts.len(), 2);
    assert!(ep.children.is_empty() && ep.folded.is_empty());
    // Sampled events alone open nothing.
    let mut e = engine(Rules::default());
    e.push(at(A, T0, net_drop("NO_SOCKET")));
    assert!(e.finish(T0 + 30 * S).is_empty());
}

/// A summary read so late that the burst of its drops was handed out: late
/// (counted), not a second burst; one well after that burst is a new one.
#[test]
fn a_summary_arriving_after_its_burst_closed_is_late_not_a_new_burst() {
    let mut e = engine(Rules { quiet: std::time::Duration::from_secs(1), ..Default::default() });
    e.push(at(A, T0, reset(Direction::Sent)));
    let out = e.advance(T0 + 20 * S);
    assert_eq!(out.len(), 1);
    // Its drops, 2 ms after the reset, read long after the close.
    e.push(at(A, T0 + 2 * MS, drop_summary("NO_SOCKET", 1)));
    assert!(e.advance(T0 + 40 * S).is_empty());
    assert_eq!(e.stats().late, 1);
    e.push(at(A, T0 + 30 * S, drop_summary("NO_SOCKET", 4)));
    let out = e.advance(T0 + 60 * S);
    assert_eq!(out.len(), 1);
    assert_eq!(count(&out[0], Signal::NetDrop("NO_SOCKET".into())), 4);
}

#[test]
fn span_ids_are_unique_and_deterministic() {
    let run = || {
        let mut e = engine(Rules { span_budget: 2, ..Default::default() });
        for i in 0..5 {
            e.push(at(A, T0 + i * S, throttle(MS)));
            e.push(at(B, T0 + i * S, reset(Direction::Sent)));
        }
        e.finish(T0 + 10 * S)
    };
    let (a, b) = (run(), run());
    let mut ids = std::collections::HashSet::new();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.root, y.root);
        assert!(ids.insert(x.root.span_id));
        for c in &x.children {
            assert!(ids.insert(c.span_id));
        }
        for f in &x.folded {
            assert!(ids.insert(f.span_id));
        }
    }
    assert_eq!(ids.len(), 2 + 4 + 2);
    assert!(!ids.contains(&[0; 8]));
}

#[test]
fn the_drop_summary_after_a_burst_counts_into_it_without_stretching_it() {
    // Quiet shorter than the summaries' tick: the burst still waits for the
    // summary that counts its drops (stamped up to a tick later).
    let mut e = engine(Rules { quiet: std::time::Duration::from_secs(1), ..Default::default() });
    e.push(at(A, T0, reset(Direction::Sent)));
    e.push(at(A, T0 + MS, reset(Direction::Received)));
    e.push(at(A, T0 + 1200 * MS, drop_summary("NO_SOCKET", 1)));
    let out = e.finish(T0 + 30 * S);
    assert_eq!(out.len(), 1, "one burst, not a second one for the summary: {out:?}");
    let ep = &out[0];
    assert_eq!(count(ep, Signal::NetDrop("NO_SOCKET".into())), 1);
    assert_eq!(count(ep, Signal::TcpReset("sent")), 1);
    assert_eq!(ep.end_unix_nano, T0 + MS, "a summary does not move the end");
    assert_eq!(ep.closed_by, CloseReason::Quiet);
    // Summaries alone (drops without resets) still make a burst.
    let mut e = engine(Rules { quiet: std::time::Duration::from_secs(1), ..Default::default() });
    e.push(at(B, T0, drop_summary("NO_SOCKET", 4)));
    e.push(at(B, T0 + 5 * S, drop_summary("NO_SOCKET", 2)));
    let out = e.finish(T0 + 30 * S);
    assert_eq!(out.len(), 2, "a summary does not keep a burst open: {out:?}");
    // Drops without a reason count into an open burst, and open none.
    let mut e = engine(Rules { quiet: std::time::Duration::from_secs(1), ..Default::default() });
    e.push(at(A, T0, reset(Direction::Sent)));
    e.push(at(A, T0 + S, drop_summary("NOT_SPECIFIED", 2)));
    e.push(at(A, T0 + 10 * S, drop_summary("NOT_SPECIFIED", 2)));
    let out = e.finish(T0 + 30 * S);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(count(&out[0], Signal::NetDrop("NOT_SPECIFIED".into())), 2);
}

#[test]
fn open_episodes_are_visible_until_they_close() {
    let mut e = engine(Rules::default());
    e.push(at(A, T0, high(2)));
    e.push(at(B, T0 + S, reset(Direction::Sent)));
    assert!(e.open_episodes().is_empty(), "still in the reorder window");
    e.advance(T0 + S + W);
    let mut open = e.open_episodes();
    open.sort_by_key(|o| o.key);
    let seen: Vec<_> = open.iter().map(|o| (o.kind, o.key, o.start_unix_nano)).collect();
    assert_eq!(seen, [(EpisodeKind::MemoryPressure, A, T0), (EpisodeKind::TcpResetBurst, B, T0 + S)]);
    assert_eq!(open[0].counts.get(&Signal::MemoryEvents("high")), Some(&2));
    assert_eq!(open[1].counts.get(&Signal::TcpReset("sent")), Some(&1));
    let closed = e.advance(T0 + 10 * S + W);
    assert_eq!(closed.len(), 2);
    assert!(e.open_episodes().is_empty());
    let ids: Vec<_> = open.iter().map(|o| o.root).collect();
    assert!(closed.iter().all(|c| ids.contains(&c.root)), "the same episodes, by id");
}
