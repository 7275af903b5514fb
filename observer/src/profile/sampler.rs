//! The kernel side of CPU profiles: the `cpu_sample` perf-event program on
//! every online CPU, and the drain of what it counted (`observer-ebpf`'s
//! `profile.rs`). Hardware cycles where the CPU has a PMU the kernel lets
//! us use; else the software CPU clock (VMs without a virtual PMU).

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuHashMap, StackTraceMap},
    programs::{
        PerfEvent,
        perf_event::{HardwareEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use observer_common::profile::{NO_STACK, SampleKey};

const PROGRAM: &str = "cpu_sample";

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("map {map}: {error}")]
    Map { map: &'static str, error: aya::maps::MapError },
    #[error("loading {PROGRAM}: {0}")]
    Load(aya::programs::ProgramError),
    #[error("listing the online CPUs ({0}): {1}")]
    Cpus(&'static str, std::io::Error),
    #[error("starting the profile writer thread: {0}")]
    Writer(std::io::Error),
    #[error("perf_event_open on CPU {cpu} (hardware cycles, then the software CPU clock): {error}")]
    Attach { cpu: u32, error: aya::programs::ProgramError },
}

/// Which event the samples are taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Cycles,
    CpuClock,
}

impl Clock {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cycles => "cycles",
            Self::CpuClock => "cpu-clock",
        }
    }
}

/// One stack's count in a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSample {
    pub tgid: u32,
    pub cgroup_id: u64,
    /// Innermost first: the sampled instruction, then return addresses.
    pub user: Vec<u64>,
    pub kernel: Vec<u64>,
    /// The user stack could not be recorded (stack map full or a collision).
    pub user_lost: bool,
    pub count: u64,
}

pub struct CpuSampler {
    pub hz: u64,
    pub clock: Clock,
    slot: Array<MapData, u32>,
    counts: [PerCpuHashMap<MapData, SampleKey, u64>; 2],
    stacks: [StackTraceMap<MapData>; 2],
    /// The slot the program fills now.
    filling: u32,
}

impl CpuSampler {
    pub fn start(ebpf: &mut Ebpf, hz: u64) -> Result<CpuSampler, SamplerError> {
        let mut take = |map: &'static str| ebpf.take_map(map).ok_or(SamplerError::Missing(map));
        let (slot, c0, c1, s0, s1) = (
            take("PROFILE_SLOT")?,
            take("CPU_COUNTS_0")?,
            take("CPU_COUNTS_1")?,
            take("CPU_STACKS_0")?,
            take("CPU_STACKS_1")?,
        );
        let map_err = |map| move |error| SamplerError::Map { map, error };
        let slot = Array::try_from(slot).map_err(map_err("PROFILE_SLOT"))?;
        let counts = [
            PerCpuHashMap::try_from(c0).map_err(map_err("CPU_COUNTS_0"))?,
            PerCpuHashMap::try_from(c1).map_err(map_err("CPU_COUNTS_1"))?,
        ];
        let stacks = [
            StackTraceMap::try_from(s0).map_err(map_err("CPU_STACKS_0"))?,
            StackTraceMap::try_from(s1).map_err(map_err("CPU_STACKS_1"))?,
        ];
        let program: &mut PerfEvent =
            ebpf.program_mut(PROGRAM).ok_or(SamplerError::Missing(PROGRAM))?.try_into().map_err(SamplerError::Load)?;
        program.load().map_err(SamplerError::Load)?;
        let cpus = aya::util::online_cpus().map_err(|(what, e)| SamplerError::Cpus(what, e))?;
        let mut clock = Clock::Cycles;
        for cpu in cpus {
            let scope = PerfEventScope::AllProcessesOneCpu { cpu };
            let policy = SamplePolicy::Frequency(hz);
            if clock == Clock::Cycles
                && program.attach(PerfEventConfig::Hardware(HardwareEvent::CpuCycles), scope, policy, false).is_ok()
            {
                continue;
            }
            // No PMU (or none for us): every CPU then samples the same way.
            clock = Clock::CpuClock;
            program
                .attach(PerfEventConfig::Software(SoftwareEvent::CpuClock), scope, policy, false)
                .map_err(|error| SamplerError::Attach { cpu, error })?;
        }
        Ok(CpuSampler { hz, clock, slot, counts, stacks, filling: 0 })
    }

    /// Nanoseconds of CPU one sample stands for.
    pub fn period_ns(&self) -> u64 {
        1_000_000_000 / self.hz.max(1)
    }

    /// Turns the program to the other slot and takes what this one counted,
    /// leaving its maps empty. A sample that raced the switch on another CPU
    /// (microseconds) may land after its key was read and be removed with it.
    pub fn drain(&mut self) -> Vec<RawSample> {
        let drained = self.filling as usize;
        let next = 1 - self.filling;
        if let Err(e) = self.slot.set(0, next, 0) {
            tracing::warn!("cannot switch the CPU sample slot: {e}");
            return Vec::new();
        }
        self.filling = next;
        let counts = &mut self.counts[drained];
        let stacks = &mut self.stacks[drained];
        let keys: Vec<SampleKey> = counts.keys().filter_map(Result::ok).collect();
        let mut samples = Vec::with_capacity(keys.len());
        for key in &keys {
            let Ok(per_cpu) = counts.get(key, 0) else { continue };
            let count = per_cpu.iter().sum();
            let frames = |id: i32| -> Vec<u64> {
                let Ok(id) = u32::try_from(id) else { return Vec::new() };
                stacks.get(&id, 0).map(|s| s.frames().iter().map(|f| f.ip).collect()).unwrap_or_default()
            };
            samples.push(RawSample {
                tgid: key.tgid,
                cgroup_id: key.cgroup_id,
                user: frames(key.user_stack),
                kernel: frames(key.kernel_stack),
                user_lost: key.user_stack == NO_STACK,
                count,
            });
        }
        for key in &keys {
            let _ = counts.remove(key);
        }
        let ids: Vec<u32> = stacks.stack_ids().filter_map(Result::ok).collect();
        for id in ids {
            let _ = stacks.remove(&id);
        }
        samples
    }
}
