//! Drained CPU samples kept by time, with each process's mappings as they
//! were: what a rolling window or an episode's profile is cut from. Pure
//! bookkeeping; no I/O.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use super::{
    ProfileKind,
    counts::{RawSample, SampleKind},
    maps::ProcessMaps,
};

/// One drain: the samples counted between two instants (Unix ns).
#[derive(Debug, Clone)]
pub struct Slice {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub samples: Vec<RawSample>,
    /// The mappings of each process with samples here.
    pub maps: HashMap<u32, Arc<ProcessMaps>>,
}

/// Whose samples a profile takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Process(u32),
    Cgroup(u64),
}

impl Who {
    fn takes(self, s: &RawSample) -> bool {
        match self {
            Self::Process(pid) => s.tgid == pid,
            Self::Cgroup(id) => s.cgroup_id == id,
        }
    }
}

/// The samples of one profile, and the time they cover.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub samples: Vec<RawSample>,
    pub maps: HashMap<u32, Arc<ProcessMaps>>,
}

impl Selection {
    pub fn sample_count(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }
}

impl ProfileKind {
    fn takes(self, kind: SampleKind) -> bool {
        matches!((self, kind), (Self::Cpu, SampleKind::Cpu) | (Self::Alloc, SampleKind::Alloc(_)))
    }
}

/// A sample's identity: process, cgroup, user and kernel stacks, user lost,
/// kind and rate (samples of another rate stand for other amounts).
type StackKey = (u32, u64, Vec<u64>, Vec<u64>, bool, SampleKind, u64);

#[derive(Debug, Default)]
pub struct History {
    slices: VecDeque<Arc<Slice>>,
    keep_ns: u64,
}

impl History {
    pub fn new(keep: std::time::Duration) -> History {
        History { slices: VecDeque::new(), keep_ns: u64::try_from(keep.as_nanos()).unwrap_or(u64::MAX) }
    }

    /// Adds a drained slice and forgets those older than the keep time.
    pub fn push(&mut self, slice: Slice) {
        let end = slice.end_unix_nano;
        self.slices.push_back(Arc::new(slice));
        while self.slices.front().is_some_and(|s| s.end_unix_nano.saturating_add(self.keep_ns) < end) {
            self.slices.pop_front();
        }
    }

    /// `who`'s samples of `kind` in the slices that overlap `[from, to]`,
    /// summed per stack; the time covered is that of the slices taken.
    pub fn select(&self, who: Who, kind: ProfileKind, from: u64, to: u64) -> Selection {
        let mut sel = Selection::default();
        let mut summed: BTreeMap<StackKey, [u64; 3]> = BTreeMap::new();
        let mut covered: Option<(u64, u64)> = None;
        for slice in self.slices.iter().filter(|s| s.end_unix_nano >= from && s.start_unix_nano <= to) {
            let mut any = false;
            for s in slice.samples.iter().filter(|s| who.takes(s) && kind.takes(s.kind)) {
                any = true;
                let key = (s.tgid, s.cgroup_id, s.user.clone(), s.kernel.clone(), s.user_lost, s.kind, s.rate);
                let sum = summed.entry(key).or_default();
                for (total, n) in sum.iter_mut().zip([s.count, s.objects, s.bytes]) {
                    *total += n;
                }
                if let Some(m) = slice.maps.get(&s.tgid) {
                    sel.maps.entry(s.tgid).or_insert_with(|| m.clone());
                }
            }
            // From the first slice with its samples to the last one taken.
            if any || covered.is_some() {
                let start = covered.map_or(slice.start_unix_nano, |(s, _)| s);
                covered = Some((start, slice.end_unix_nano));
            }
        }
        (sel.start_unix_nano, sel.end_unix_nano) = covered.unwrap_or_default();
        sel.samples = summed
            .into_iter()
            .map(|((tgid, cgroup_id, user, kernel, user_lost, kind, rate), [count, objects, bytes])| RawSample {
                tgid,
                cgroup_id,
                user,
                kernel,
                user_lost,
                kind,
                count,
                objects,
                bytes,
                rate,
            })
            .collect();
        sel
    }

    /// The processes with samples of `kind` in `[from, to]`.
    pub fn processes(&self, kind: ProfileKind, from: u64, to: u64) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .slices
            .iter()
            .filter(|s| s.end_unix_nano >= from && s.start_unix_nano <= to)
            .flat_map(|s| s.samples.iter().filter(|x| kind.takes(x.kind)).map(|x| x.tgid))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(tgid: u32, cgroup_id: u64, ip: u64, count: u64) -> RawSample {
        RawSample {
            tgid,
            cgroup_id,
            user: vec![ip, 0x10],
            kernel: vec![],
            user_lost: false,
            kind: SampleKind::Cpu,
            count,
            objects: 0,
            bytes: 0,
            rate: 0,
        }
    }

    fn alloc(tgid: u32, ip: u64, bytes: u64) -> RawSample {
        RawSample { kind: SampleKind::Alloc(0), objects: 1, bytes, rate: 4096, ..sample(tgid, 7, ip, 1) }
    }

    fn slice(start: u64, end: u64, samples: Vec<RawSample>) -> Slice {
        Slice { start_unix_nano: start, end_unix_nano: end, samples, maps: HashMap::new() }
    }

    #[test]
    fn cpu_and_allocation_samples_are_selected_apart() {
        let mut h = History::new(std::time::Duration::from_secs(100));
        h.push(slice(0, 10, vec![sample(1, 7, 0xa, 2), alloc(1, 0xa, 100), alloc(1, 0xa, 50)]));
        h.push(slice(10, 20, vec![alloc(1, 0xa, 10), alloc(2, 0xb, 1)]));
        let cpu = h.select(Who::Process(1), ProfileKind::Cpu, 0, 20);
        assert_eq!((cpu.sample_count(), cpu.samples.len()), (2, 1));
        let allocs = h.select(Who::Process(1), ProfileKind::Alloc, 0, 20);
        assert_eq!(allocs.samples.len(), 1, "one stack, summed");
        let s = &allocs.samples[0];
        assert_eq!((s.count, s.objects, s.bytes, s.rate), (3, 3, 160, 4096));
        assert_eq!(h.processes(ProfileKind::Alloc, 11, 20), vec![1, 2]);
        assert_eq!(h.processes(ProfileKind::Cpu, 11, 20), Vec::<u32>::new());
    }

    #[test]
    fn selects_the_overlapping_slices_of_one_process_summed_per_stack() {
        let mut h = History::new(std::time::Duration::from_secs(100));
        h.push(slice(0, 10, vec![sample(1, 7, 0xa, 2), sample(2, 7, 0xa, 5)]));
        h.push(slice(10, 20, vec![sample(1, 7, 0xa, 3), sample(1, 7, 0xb, 1)]));
        h.push(slice(20, 30, vec![sample(1, 7, 0xa, 100)]));
        let sel = h.select(Who::Process(1), ProfileKind::Cpu, 5, 15);
        assert_eq!((sel.start_unix_nano, sel.end_unix_nano), (0, 20));
        assert_eq!(sel.sample_count(), 6);
        assert_eq!(sel.samples.len(), 2);
        assert_eq!(sel.samples.iter().find(|s| s.user[0] == 0xa).unwrap().count, 5);
        let cgroup = h.select(Who::Cgroup(7), ProfileKind::Cpu, 0, 9);
        assert_eq!(cgroup.sample_count(), 7);
        assert_eq!(h.select(Who::Process(3), ProfileKind::Cpu, 0, 30).sample_count(), 0);
        assert_eq!(h.processes(ProfileKind::Cpu, 0, 9), vec![1, 2]);
    }

    #[test]
    fn forgets_slices_past_the_keep_time() {
        let mut h = History::new(std::time::Duration::from_nanos(15));
        h.push(slice(0, 10, vec![sample(1, 7, 0xa, 2)]));
        h.push(slice(10, 20, vec![sample(1, 7, 0xa, 3)]));
        h.push(slice(20, 30, vec![sample(1, 7, 0xa, 4)]));
        assert_eq!(h.select(Who::Process(1), ProfileKind::Cpu, 0, 30).sample_count(), 7);
    }
}
