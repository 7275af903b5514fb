//! The kernel side of CPU profiles: the `cpu_sample` perf-event program on
//! every online CPU (`observer-ebpf`'s `profile.rs`). Hardware cycles where the CPU has a PMU the kernel lets
//! us use; else the software CPU clock (VMs without a virtual PMU).

use aya::{
    Ebpf,
    programs::{
        PerfEvent,
        perf_event::{HardwareEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};

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

/// The perf events of every CPU; what they count is drained by
/// [`KernelCounts`](super::counts::KernelCounts).
pub struct CpuSampler {
    pub hz: u64,
    pub clock: Clock,
}

impl CpuSampler {
    pub fn start(ebpf: &mut Ebpf, hz: u64) -> Result<CpuSampler, SamplerError> {
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
        Ok(CpuSampler { hz, clock })
    }

    /// Nanoseconds of CPU one sample stands for.
    pub fn period_ns(&self) -> u64 {
        1_000_000_000 / self.hz.max(1)
    }
}
