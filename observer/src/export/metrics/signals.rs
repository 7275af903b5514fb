//! The observed signals as counters per workload: what alerts are written
//! on ("resets sent per pod", "drops by reason per pod", "OOM kills").
//! Pure counting of attributed records, no I/O.
//!
//! Label cardinality is bounded: at most [`MAX_WORKLOADS`] workloads get
//! series of their own, in the order they were first seen; records of any
//! later workload are counted under the workload [`OTHER`]. A workload
//! keeps its series once it has them (a counter must not vanish while
//! Prometheus still scrapes it), so the bound is on the agent's lifetime.

use std::collections::{BTreeMap, HashMap};

use crate::{
    event::{Direction, Event},
    workload::{Attributed, Identity, WorkloadKey},
};

/// Workloads with series of their own.
pub const MAX_WORKLOADS: usize = 500;
/// Drop reasons with series of their own per workload (the kernel has
/// about a hundred; in practice a handful show up).
pub const MAX_REASONS: usize = 64;
/// The `service_name` of the series the rest are folded into.
pub const OTHER: &str = "_other";

/// What a workload's series are labelled with.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadLabels {
    pub service_name: String,
    /// Below the cgroup2 mount; empty for a network namespace.
    pub cgroup: String,
    pub container_id: String,
    /// From the Kubernetes metadata, when the agent has it.
    pub k8s_namespace: String,
    pub k8s_pod: String,
}

impl WorkloadLabels {
    fn of(identity: &Identity) -> Self {
        let k8s = identity.k8s.as_ref();
        Self {
            service_name: identity.service_name.clone(),
            cgroup: identity.cgroup_path.clone().unwrap_or_default(),
            container_id: identity.container_id.clone().unwrap_or_default(),
            k8s_namespace: k8s.and_then(|k| k.namespace.clone()).unwrap_or_default(),
            k8s_pod: k8s.and_then(|k| k.pod_name.clone()).unwrap_or_default(),
        }
    }

    fn other() -> Self {
        Self { service_name: OTHER.into(), ..Self::default() }
    }

    /// As Prometheus label pairs, in a fixed order.
    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            ("service_name", &self.service_name),
            ("cgroup", &self.cgroup),
            ("container_id", &self.container_id),
            ("k8s_namespace", &self.k8s_namespace),
            ("k8s_pod", &self.k8s_pod),
        ]
    }
}

/// One workload's counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalCounts {
    pub resets_sent: u64,
    pub resets_received: u64,
    /// Packets dropped, by the kernel's reason name.
    pub drops: BTreeMap<String, u64>,
    pub retransmits: u64,
    pub oom_kills: u64,
    /// `memory.events` `high` rises.
    pub memory_high: u64,
    /// Time tasks spent throttled over `memory.high`, where measured.
    pub throttled_ns: u64,
    pub gc_cycles: u64,
}

/// The counts of every workload seen.
#[derive(Debug, Default)]
pub struct WorkloadSignals {
    index: HashMap<WorkloadKey, usize>,
    workloads: Vec<(WorkloadLabels, SignalCounts)>,
    /// Index of the [`OTHER`] series, once needed.
    other: Option<usize>,
}

impl WorkloadSignals {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one attributed record.
    pub fn observe(&mut self, a: &Attributed) {
        if !counts_anything(&a.record.event) {
            return;
        }
        let slot = self.slot(a.key, &a.identity);
        let c = &mut self.workloads[slot].1;
        match &a.record.event {
            Event::TcpReset(r) => match r.direction {
                Direction::Sent => c.resets_sent += 1,
                Direction::Received => c.resets_received += 1,
            },
            // Every drop is counted in the kernel and reported by the
            // summaries; the individual `net.drop` events are a sample of them.
            Event::NetDropSummary(s) => {
                let reason = match c.drops.contains_key(&s.reason) || c.drops.len() < MAX_REASONS {
                    true => s.reason.clone(),
                    false => OTHER.to_string(),
                };
                *c.drops.entry(reason).or_default() += s.count;
            }
            Event::TcpRetransmit(_) => c.retransmits += 1,
            Event::MemcgOomKill(_) => c.oom_kills += 1,
            Event::MemcgEvents(e) => c.memory_high += e.delta.high,
            Event::MemcgThrottle(t) => c.throttled_ns += t.duration_ns.unwrap_or(0),
            Event::GoGc(_) => c.gc_cycles += 1,
            _ => {}
        }
    }

    fn slot(&mut self, key: WorkloadKey, identity: &Identity) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = if self.index.len() < MAX_WORKLOADS {
            self.workloads.push((WorkloadLabels::of(identity), SignalCounts::default()));
            self.workloads.len() - 1
        } else {
            *self.other.get_or_insert_with(|| {
                self.workloads.push((WorkloadLabels::other(), SignalCounts::default()));
                self.workloads.len() - 1
            })
        };
        self.index.insert(key, i);
        i
    }

    /// Every workload's labels and counts, for a scrape.
    pub fn snapshot(&self) -> Vec<(WorkloadLabels, SignalCounts)> {
        self.workloads.clone()
    }
}

fn counts_anything(event: &Event) -> bool {
    matches!(
        event,
        Event::TcpReset(_)
            | Event::NetDropSummary(_)
            | Event::TcpRetransmit(_)
            | Event::MemcgOomKill(_)
            | Event::MemcgEvents(_)
            | Event::MemcgThrottle(_)
            | Event::GoGc(_)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{Attribution, NetDropSummary, Record, TcpReset};

    fn attributed(key: WorkloadKey, service: &str, event: Event) -> Attributed {
        let identity = Arc::new(Identity { service_name: service.into(), ..Identity::default() });
        Attributed { key, identity, record: Record { time: String::new(), time_unix_nano: 0, event } }
    }

    fn reset(direction: Direction) -> Event {
        Event::TcpReset(TcpReset {
            direction,
            family: "ipv4",
            local_addr: [127, 0, 0, 1].into(),
            local_port: 1,
            remote_addr: [127, 0, 0, 1].into(),
            remote_port: 2,
            state: None,
            reason: None,
            netns: 1,
            who: Attribution::default(),
        })
    }

    fn drops(reason: &str, count: u64) -> Event {
        Event::NetDropSummary(NetDropSummary {
            netns: 1,
            netns_owner: None,
            reason: reason.into(),
            reason_code: None,
            reason_source: "reason",
            location: None,
            flags_class: "other",
            count,
            total: count,
        })
    }

    fn cgroup(id: u64) -> WorkloadKey {
        WorkloadKey::Cgroup { cgroup_id: id }
    }

    #[test]
    fn counts_per_workload_and_kind() {
        let mut s = WorkloadSignals::new();
        s.observe(&attributed(cgroup(1), "a", reset(Direction::Sent)));
        s.observe(&attributed(cgroup(1), "a", reset(Direction::Sent)));
        s.observe(&attributed(cgroup(1), "a", reset(Direction::Received)));
        s.observe(&attributed(cgroup(2), "b", drops("NO_SOCKET", 7)));
        s.observe(&attributed(cgroup(2), "b", drops("NO_SOCKET", 3)));
        let snap = s.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!((snap[0].0.service_name.as_str(), snap[0].1.resets_sent, snap[0].1.resets_received), ("a", 2, 1));
        assert_eq!(snap[1].1.drops.get("NO_SOCKET"), Some(&10));
    }

    #[test]
    fn workloads_past_the_cap_fold_into_other() {
        let mut s = WorkloadSignals::new();
        for id in 0..(MAX_WORKLOADS as u64 + 10) {
            s.observe(&attributed(cgroup(id), &format!("w{id}"), reset(Direction::Sent)));
        }
        let snap = s.snapshot();
        assert_eq!(snap.len(), MAX_WORKLOADS + 1, "the cap plus one folded series");
        let other = snap.iter().find(|(l, _)| l.service_name == OTHER).expect("the folded series");
        assert_eq!(other.1.resets_sent, 10);
        let total: u64 = snap.iter().map(|(_, c)| c.resets_sent).sum();
        assert_eq!(total, MAX_WORKLOADS as u64 + 10, "nothing lost by folding");
    }

    #[test]
    fn records_that_count_nothing_make_no_series() {
        let mut s = WorkloadSignals::new();
        let attach = Event::GoScavengeSummary(crate::event::GoScavengeSummary {
            calls: 1,
            bytes: 1,
            total_calls: 1,
            total_bytes: 1,
            owner: crate::event::GoOwner { go_version: None, go_module: None, who: Attribution::default() },
        });
        s.observe(&attributed(cgroup(1), "a", attach));
        assert!(s.snapshot().is_empty());
    }

    #[test]
    fn reasons_past_the_cap_fold_into_other() {
        let mut s = WorkloadSignals::new();
        for r in 0..(MAX_REASONS + 5) {
            s.observe(&attributed(cgroup(1), "a", drops(&format!("R{r}"), 1)));
        }
        let drops = &s.snapshot()[0].1.drops;
        assert_eq!(drops.len(), MAX_REASONS + 1);
        assert_eq!(drops.get(OTHER), Some(&5));
    }
}
