//! What the kernel counted for profiles since the last drain: CPU samples
//! (`cpu_sample`) and allocation samples (`observer-ebpf`'s `alloc.rs`),
//! each by stack, in two slots of maps. A drain turns the programs to the
//! other slot and takes this one's, leaving it empty.

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuHashMap},
};
use observer_common::profile::{AllocCounts, AllocKey, NO_STACK, SampleKey, Stack, alloc_method};

use super::sampler::SamplerError;

/// What one stack's samples measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SampleKind {
    Cpu,
    /// One of `observer_common::profile::alloc_method`.
    Alloc(u32),
}

impl SampleKind {
    /// `cpu`, or the allocation method's name (a profile says which).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Alloc(alloc_method::SAMPLED) => "memprofile",
            Self::Alloc(alloc_method::SPAN_REFILL) => "span_refill",
            Self::Alloc(alloc_method::LARGE) => "large",
            Self::Alloc(_) => "unknown",
        }
    }
}

/// One stack's counts in a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSample {
    pub tgid: u32,
    pub cgroup_id: u64,
    /// Innermost first: the sampled instruction, then return addresses.
    pub user: Vec<u64>,
    pub kernel: Vec<u64>,
    /// The user stack could not be recorded (the stack map was full).
    pub user_lost: bool,
    pub kind: SampleKind,
    /// Samples taken.
    pub count: u64,
    /// For allocations: the objects and bytes the samples stand for.
    pub objects: u64,
    pub bytes: u64,
    /// For the runtime's own allocation samples: its `MemProfileRate` when
    /// they were taken (0: not known).
    pub rate: u64,
}

/// The two slots' maps.
pub struct KernelCounts {
    slot: Array<MapData, u32>,
    cpu: [PerCpuHashMap<MapData, SampleKey, u64>; 2],
    allocs: [PerCpuHashMap<MapData, AllocKey, AllocCounts>; 2],
    stacks: [HashMap<MapData, u64, Stack>; 2],
    /// The slot the programs fill now.
    filling: u32,
}

impl KernelCounts {
    pub fn take(ebpf: &mut Ebpf) -> Result<KernelCounts, SamplerError> {
        fn map<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<T, SamplerError> {
            let m = ebpf.take_map(name).ok_or(SamplerError::Missing(name))?;
            T::try_from(m).map_err(|error| SamplerError::Map { map: name, error })
        }
        Ok(KernelCounts {
            slot: map(ebpf, "PROFILE_SLOT")?,
            cpu: [map(ebpf, "CPU_COUNTS_0")?, map(ebpf, "CPU_COUNTS_1")?],
            allocs: [map(ebpf, "ALLOC_COUNTS_0")?, map(ebpf, "ALLOC_COUNTS_1")?],
            stacks: [map(ebpf, "STACKS_0")?, map(ebpf, "STACKS_1")?],
            filling: 0,
        })
    }

    /// Turns the programs to the other slot and takes what this one
    /// counted. A sample that raced the switch on another CPU
    /// (microseconds) may land after its key was read and be removed with it.
    pub fn drain(&mut self) -> Vec<RawSample> {
        let drained = self.filling as usize;
        let next = 1 - self.filling;
        if let Err(e) = self.slot.set(0, next, 0) {
            tracing::warn!("cannot switch the profile sample slot: {e}");
            return Vec::new();
        }
        self.filling = next;
        let stacks = &self.stacks[drained];
        let frames = |key: u64| -> Vec<u64> {
            if key == NO_STACK {
                return Vec::new();
            }
            let Ok(s) = stacks.get(&key, 0) else { return Vec::new() };
            s.ips[..(s.len as usize).min(s.ips.len())].to_vec()
        };
        let mut samples = Vec::new();
        let cpu = &mut self.cpu[drained];
        let keys: Vec<SampleKey> = cpu.keys().filter_map(Result::ok).collect();
        for key in &keys {
            let Ok(per_cpu) = cpu.get(key, 0) else { continue };
            samples.push(RawSample {
                tgid: key.tgid,
                cgroup_id: key.cgroup_id,
                user: frames(key.user_stack),
                kernel: frames(key.kernel_stack),
                user_lost: key.user_stack == NO_STACK,
                kind: SampleKind::Cpu,
                count: per_cpu.iter().sum(),
                objects: 0,
                bytes: 0,
                rate: 0,
            });
        }
        for key in &keys {
            let _ = cpu.remove(key);
        }
        let allocs = &mut self.allocs[drained];
        let keys: Vec<AllocKey> = allocs.keys().filter_map(Result::ok).collect();
        for key in &keys {
            let Ok(per_cpu) = allocs.get(key, 0) else { continue };
            let sum = |f: fn(&AllocCounts) -> u64| per_cpu.iter().map(f).sum();
            samples.push(RawSample {
                tgid: key.tgid,
                cgroup_id: key.cgroup_id,
                user: frames(key.user_stack),
                kernel: Vec::new(),
                user_lost: key.user_stack == NO_STACK,
                kind: SampleKind::Alloc(key.method),
                count: sum(|c| c.samples),
                objects: sum(|c| c.objects),
                bytes: sum(|c| c.bytes),
                rate: per_cpu.iter().map(|c| c.rate).max().unwrap_or(0),
            });
        }
        for key in &keys {
            let _ = allocs.remove(key);
        }
        let stacks = &mut self.stacks[drained];
        let keys: Vec<u64> = stacks.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = stacks.remove(&key);
        }
        samples
    }
}
