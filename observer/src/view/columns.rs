//! The workload table's columns: header, width, what a cell shows and how a
//! column sorts; and the filter. Pure: the draw and key modules use them,
//! tests check them without a terminal.
//!
//! A signal's cell is `TOTAL` since start, then `+N` for the last interval
//! when anything happened in it (`12 +3`); durations likewise (`1.2s +30ms`).

use std::time::Duration;

use super::{
    model::{Row, Snapshot, Tally},
    timeline::{Summary, bytes, duration},
};
use crate::correlate::{EpisodeKind, Signal};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Workload,
    Open,
    Pids,
    Go,
    Events,
    Gc,
    GcTime,
    Assist,
    Heap,
    Scavenged,
    High,
    Throttled,
    Reclaim,
    Psi,
    Oom,
    RstSent,
    RstReceived,
    Drops,
    Retransmits,
}

impl Column {
    pub const ALL: [Column; 19] = [
        Column::Workload,
        Column::Open,
        Column::Pids,
        Column::Go,
        Column::Events,
        Column::Gc,
        Column::GcTime,
        Column::Assist,
        Column::Heap,
        Column::Scavenged,
        Column::High,
        Column::Throttled,
        Column::Reclaim,
        Column::Psi,
        Column::Oom,
        Column::RstSent,
        Column::RstReceived,
        Column::Drops,
        Column::Retransmits,
    ];

    pub fn header(self) -> &'static str {
        match self {
            Column::Workload => "WORKLOAD",
            Column::Open => "EPISODE",
            Column::Pids => "PID",
            Column::Go => "GO",
            Column::Events => "EVENTS",
            Column::Gc => "GC",
            Column::GcTime => "GC%",
            Column::Assist => "ASSIST",
            Column::Heap => "HEAP/GOAL",
            Column::Scavenged => "SCAVENGED",
            Column::High => "HIGH",
            Column::Throttled => "THROTTLED",
            Column::Reclaim => "RECLAIM",
            Column::Psi => "PSI",
            Column::Oom => "OOM",
            Column::RstSent => "RST-SENT",
            Column::RstReceived => "RST-RECV",
            Column::Drops => "DROPS",
            Column::Retransmits => "RETRANS",
        }
    }

    pub fn width(self) -> u16 {
        match self {
            Column::Workload => 34,
            Column::Open => 8,
            Column::Pids => 12,
            Column::Go => 9,
            Column::Heap => 11,
            Column::GcTime | Column::Oom => 6,
            _ => 10,
        }
    }

    /// Numeric columns sort largest first; text columns A to Z.
    pub fn descending_first(self) -> bool {
        !matches!(self, Column::Workload | Column::Pids | Column::Go)
    }

    pub fn cell(self, row: &Row, interval: Duration) -> String {
        let count = |s: Signal| counted(row.total.get(&s), row.last.get(&s));
        match self {
            Column::Workload => row.name(),
            Column::Open => match row.open {
                Some(EpisodeKind::MemoryPressure) => "memory".into(),
                Some(EpisodeKind::TcpResetBurst) => "resets".into(),
                None => String::new(),
            },
            Column::Pids => {
                let pids: Vec<String> = row.pids.iter().map(u32::to_string).collect();
                pids.join(",") + if row.more_pids { "+" } else { "" }
            }
            Column::Go => row.identity.go_version.as_deref().map(crate::export::live::printable).unwrap_or_default(),
            Column::Events => counted(row.total.records, row.last.records),
            Column::Gc => count(Signal::GcCycle),
            Column::GcTime => match interval.as_nanos() {
                0 => String::new(),
                n => format!("{:.1}%", row.last.gc_ns as f64 * 100.0 / n as f64),
            },
            Column::Assist => timed(row.total.assist_ns, row.last.assist_ns),
            Column::Heap => match (row.heap, row.goal) {
                (Some(h), Some(g)) => format!("{}/{}", bytes(h as i64), bytes(g as i64)),
                _ => String::new(),
            },
            Column::Scavenged => sized(row.total.get(&Signal::ScavengeBytes), row.last.get(&Signal::ScavengeBytes)),
            Column::High => count(Signal::MemoryEvents("high")),
            Column::Throttled => timed(row.total.throttle_ns, row.last.throttle_ns),
            Column::Reclaim => count(Signal::Reclaim),
            Column::Psi => {
                let us = |t: &Tally| t.get(&Signal::PressureStallUs("some")) * 1000;
                timed(us(&row.total), us(&row.last))
            }
            Column::Oom => count(Signal::OomKill),
            Column::RstSent => count(Signal::TcpReset("sent")),
            Column::RstReceived => count(Signal::TcpReset("received")),
            Column::Drops => counted(row.total.drops(), row.last.drops()),
            Column::Retransmits => count(Signal::RetransmitSegments),
        }
    }

    /// The value this column sorts rows by (totals since start).
    fn key(self, row: &Row) -> Key {
        let n = |s: Signal| Key::Num(row.total.get(&s));
        match self {
            Column::Workload => Key::Text(row.identity.service_name.to_lowercase()),
            Column::Open => Key::Num(match row.open {
                Some(EpisodeKind::MemoryPressure) => 2,
                Some(EpisodeKind::TcpResetBurst) => 1,
                None => 0,
            }),
            Column::Pids => Key::Num(row.pids.first().copied().map_or(0, u64::from)),
            Column::Go => Key::Text(row.identity.go_version.clone().unwrap_or_default()),
            Column::Events => Key::Num(row.total.records),
            Column::Gc => n(Signal::GcCycle),
            Column::GcTime => Key::Num(row.last.gc_ns),
            Column::Assist => Key::Num(row.total.assist_ns),
            Column::Heap => Key::Num(row.heap.unwrap_or(0)),
            Column::Scavenged => n(Signal::ScavengeBytes),
            Column::High => n(Signal::MemoryEvents("high")),
            Column::Throttled => Key::Num(row.total.throttle_ns),
            Column::Reclaim => n(Signal::Reclaim),
            Column::Psi => n(Signal::PressureStallUs("some")),
            Column::Oom => n(Signal::OomKill),
            Column::RstSent => n(Signal::TcpReset("sent")),
            Column::RstReceived => n(Signal::TcpReset("received")),
            Column::Drops => Key::Num(row.total.drops()),
            Column::Retransmits => n(Signal::RetransmitSegments),
        }
    }

    pub fn next(self, step: isize) -> Column {
        let i = Column::ALL.iter().position(|&c| c == self).unwrap_or(0) as isize;
        Column::ALL[(i + step).rem_euclid(Column::ALL.len() as isize) as usize]
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Num(u64),
    Text(String),
}

fn counted(total: u64, last: u64) -> String {
    if last == 0 { total.to_string() } else { format!("{total} +{last}") }
}

/// Bytes since start, `+` the last interval's (memory returned to the OS).
fn sized(total: u64, last: u64) -> String {
    let b = |n: u64| bytes(i64::try_from(n).unwrap_or(i64::MAX));
    match (total, last) {
        (0, _) => "0".into(),
        (t, 0) => b(t),
        (t, l) => format!("{} +{}", b(t), b(l)),
    }
}

fn timed(total_ns: u64, last_ns: u64) -> String {
    match (total_ns, last_ns) {
        (0, _) => "0".into(),
        (t, 0) => duration(t),
        (t, l) => format!("{} +{}", duration(t), duration(l)),
    }
}

/// What the user typed after `/`: `text` matches a workload's name, its
/// Kubernetes namespace or an episode's kind; `name:`, `ns:` or `kind:`
/// before it matches that only. Case-insensitive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    field: Option<Field>,
    text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
    Kind,
}

impl Filter {
    pub fn parse(typed: &str) -> Filter {
        let typed = typed.trim();
        let (field, text) = match typed.split_once(':') {
            Some(("name", t)) => (Some(Field::Name), t),
            Some(("ns" | "namespace", t)) => (Some(Field::Namespace), t),
            Some(("kind", t)) => (Some(Field::Kind), t),
            _ => (None, typed),
        };
        Filter { field, text: text.trim().to_lowercase() }
    }

    fn matches(&self, name: &str, namespace: Option<&str>, kinds: &[&str]) -> bool {
        let has = |s: &str| s.to_lowercase().contains(&self.text);
        let name = || has(name);
        let ns = || namespace.is_some_and(has);
        let kind = || kinds.iter().any(|k| has(k));
        match self.field {
            _ if self.text.is_empty() => true,
            Some(Field::Name) => name(),
            Some(Field::Namespace) => ns(),
            Some(Field::Kind) => kind(),
            None => name() || ns() || kind(),
        }
    }

    pub fn row(&self, row: &Row) -> bool {
        let w = &row.identity;
        let namespace = w.k8s.as_ref().and_then(|k| k.namespace.as_deref());
        let kinds: Vec<&str> = row.open.map(EpisodeKind::name).into_iter().collect();
        self.matches(&w.service_name, namespace, &kinds)
            || w.cgroup_path.as_deref().is_some_and(|p| self.field != Some(Field::Kind) && self.matches(p, None, &[]))
    }

    pub fn episode(&self, e: &Summary) -> bool {
        self.matches(&e.workload, e.namespace.as_deref(), &[&e.kind])
    }
}

/// The rows to show, filtered and sorted (ties by name, then key).
pub fn rows<'a>(snapshot: &'a Snapshot, sort: Column, descending: bool, filter: &Filter) -> Vec<&'a Row> {
    let mut rows: Vec<&Row> = snapshot.rows.iter().filter(|r| filter.row(r)).collect();
    rows.sort_by(|a, b| {
        let by = sort.key(a).cmp(&sort.key(b));
        let by = if descending { by.reverse() } else { by };
        by.then_with(|| a.identity.service_name.cmp(&b.identity.service_name)).then_with(|| a.key.cmp(&b.key))
    });
    rows
}

/// The episodes to show: open ones first (newest first), then closed ones
/// (newest first), filtered.
pub fn episodes(snapshot: &Snapshot, filter: &Filter) -> Vec<Summary> {
    let mut open: Vec<Summary> = snapshot.open.iter().map(Summary::of_open).collect();
    open.sort_by(|a, b| b.start_unix_nano.cmp(&a.start_unix_nano).then_with(|| a.id.cmp(&b.id)));
    open.into_iter()
        .chain(snapshot.closed.iter().map(|e| Summary::of_closed(e)))
        .filter(|s| filter.episode(s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::Direction,
        view::model::{
            Model,
            tests::{attributed, gc, reset},
        },
        workload::WorkloadKey,
    };

    fn snapshot() -> Snapshot {
        let mut m = Model::new();
        let a = WorkloadKey::Process { cgroup_id: 0, pid: 1 };
        let b = WorkloadKey::Netns { netns: 2 };
        for _ in 0..5 {
            m.record(&attributed(a, "api", gc(1 << 20, 4 << 20)));
        }
        for _ in 0..2 {
            m.record(&attributed(b, "Resets", reset(Direction::Sent, None)));
        }
        m.record(&attributed(a, "api", scavenged(4 << 20)));
        m.interval(Duration::from_secs(1));
        m.record(&attributed(b, "Resets", reset(Direction::Sent, None)));
        m.record(&attributed(a, "api", scavenged(1 << 20)));
        m.snapshot()
    }

    /// A summary of the kernel's scavenger counts.
    fn scavenged(bytes: u64) -> crate::event::Record {
        let summary = crate::event::GoScavengeSummary {
            calls: bytes >> 16,
            bytes,
            total_calls: bytes >> 16,
            total_bytes: bytes,
            owner: crate::event::GoOwner { go_version: None, go_module: None, who: Default::default() },
        };
        crate::event::Record {
            time: String::new(),
            time_unix_nano: 1,
            event: crate::event::Event::GoScavengeSummary(summary),
        }
    }

    fn names(rows: &[&Row]) -> Vec<String> {
        rows.iter().map(|r| r.name()).collect()
    }

    #[test]
    fn sorting_changes_the_order() {
        let s = snapshot();
        let none = Filter::default();
        assert_eq!(names(&rows(&s, Column::Gc, true, &none)), ["api", "Resets"]);
        assert_eq!(names(&rows(&s, Column::RstSent, true, &none)), ["Resets", "api"]);
        assert_eq!(names(&rows(&s, Column::RstSent, false, &none)), ["api", "Resets"]);
        assert_eq!(names(&rows(&s, Column::Workload, false, &none)), ["api", "Resets"], "case-insensitive");
    }

    #[test]
    fn cells_show_the_total_and_the_last_interval() {
        let s = snapshot();
        let r = |n: &str| s.rows.iter().find(|r| r.name() == n).unwrap().clone();
        let interval = Duration::from_secs(1);
        assert_eq!(Column::Gc.cell(&r("api"), interval), "5 +5");
        assert_eq!(Column::RstSent.cell(&r("Resets"), interval), "3 +2", "the last full interval had 2");
        assert_eq!(Column::Heap.cell(&r("api"), interval), "1MiB/4MiB");
        assert_eq!(Column::Scavenged.cell(&r("api"), interval), "5MiB +4MiB", "summaries' bytes");
        assert_eq!(Column::Scavenged.cell(&r("Resets"), interval), "0");
        assert_eq!(Column::RstReceived.cell(&r("api"), interval), "0");
        assert_eq!(Column::Pids.cell(&r("api"), interval), "1");
    }

    #[test]
    fn filters_by_name_namespace_or_kind() {
        let s = snapshot();
        assert_eq!(names(&rows(&s, Column::Workload, false, &Filter::parse("res"))), ["Resets"]);
        assert_eq!(names(&rows(&s, Column::Workload, false, &Filter::parse("name:API"))), ["api"]);
        assert!(rows(&s, Column::Workload, false, &Filter::parse("ns:api")).is_empty());
        assert!(rows(&s, Column::Workload, false, &Filter::parse("kind:memory")).is_empty());
        let e = Summary::of_closed(&crate::export::otlp::testdata::episode_with_every_child());
        assert!(Filter::parse("kind:memory.pressure").episode(&e));
        assert!(!Filter::parse("kind:tcp").episode(&e));
        assert!(Filter::parse("check").episode(&e));
    }

    #[test]
    fn sort_column_cycles() {
        assert_eq!(Column::Workload.next(-1), Column::Retransmits);
        assert_eq!(Column::Retransmits.next(1), Column::Workload);
        assert_eq!(Column::Gc.next(1), Column::GcTime);
    }
}
