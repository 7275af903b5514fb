//! New and ended processes, from the kernel: `sched:sched_process_exec` and
//! `sched:sched_process_exit` events arrive through the ring buffer, are
//! queued here while it is drained, and turn into [`Change`]s on the next
//! [`ProcessWatch::changes`]. `/proc` is scanned once at start (after the
//! tracepoints are attached, so nothing starts unseen in between), again
//! every [`RESCAN_EVERY`] for anything missed, and at once when the ring
//! buffer had no room for an event (`PROCESS_LOST` grew).
//!
//! Without the tracepoints, `/proc` is scanned every [`SCAN_EVERY`] instead,
//! after one warning saying so.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
    programs::{ProgramError, TracePoint, trace_point::TracePointLinkId},
};
use observer_common::{EventKind, process::ProcessEvent};

use super::discovery::{Change, ProcScan};
use crate::kernel::{
    features::chain,
    tracefs::{Format, TracefsError},
};

/// How often `/proc` is scanned without the tracepoints.
pub const SCAN_EVERY: Duration = Duration::from_millis(250);
/// How often `/proc` is scanned with them, for events missed anyway.
pub const RESCAN_EVERY: Duration = Duration::from_secs(5);
/// How long what was read from a binary is kept after its last process ended.
pub const KEEP_UNUSED: Duration = Duration::from_secs(30);
/// (program, tracepoint category, tracepoint name).
const TRACEPOINTS: [(&str, &str, &str); 2] =
    [("process_exec", "sched", "sched_process_exec"), ("process_exit", "sched", "sched_process_exit")];
const LOST_MAP: &str = "PROCESS_LOST";

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("program {0} missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map {LOST_MAP} missing from the eBPF object")]
    MissingMap,
    #[error("{0}: {1}")]
    Program(&'static str, String),
    #[error("map {LOST_MAP}: {0}")]
    Map(#[from] aya::maps::MapError),
}

#[derive(Debug, Clone, Copy)]
enum Queued {
    Exec { pid: u32, at_ns: u64 },
    Exit { pid: u32, at_ns: u64 },
}

pub struct ProcessWatch {
    scan: ProcScan,
    /// `PROCESS_LOST` while the tracepoints are attached; `None`: polling.
    lost: Option<PerCpuArray<MapData, u64>>,
    lost_seen: u64,
    queued: Vec<Queued>,
    next_scan: Instant,
    every: Duration,
}

impl ProcessWatch {
    /// Attaches the tracepoints, or falls back to polling with one warning.
    /// The first [`ProcessWatch::changes`] scans `/proc`.
    pub fn start(ebpf: &mut Ebpf, tracefs: &Path) -> Self {
        let lost = match attach(ebpf, tracefs) {
            Ok(lost) => Some(lost),
            Err(err) => {
                tracing::warn!(
                    "process exec/exit tracepoints unavailable ({}); finding Go processes by scanning /proc every {} ms instead",
                    chain(&err),
                    SCAN_EVERY.as_millis()
                );
                None
            }
        };
        let every = if lost.is_some() { RESCAN_EVERY } else { SCAN_EVERY };
        Self { scan: ProcScan::default(), lost, lost_seen: 0, queued: Vec::new(), next_scan: Instant::now(), every }
    }

    /// How new processes are found, for the ready line.
    pub fn mechanism(&self) -> &'static str {
        if self.lost.is_some() { "sched_process_exec/exit" } else { "/proc polling" }
    }

    /// Takes an exec or exit event from the ring buffer.
    pub fn queue(&mut self, kind: EventKind, event: &ProcessEvent) {
        let (pid, at_ns) = (event.pid, event.header.ts_ns);
        match kind {
            EventKind::ProcessExec => self.queued.push(Queued::Exec { pid, at_ns }),
            EventKind::ProcessExit => self.queued.push(Queued::Exit { pid, at_ns }),
            _ => {}
        }
    }

    /// Whether [`ProcessWatch::changes`] has anything to do: events queued,
    /// a scan due, or events lost (which makes a scan due now).
    pub fn due(&mut self) -> bool {
        if self.lost_grew() {
            self.next_scan = Instant::now();
        }
        !self.queued.is_empty() || Instant::now() >= self.next_scan
    }

    /// What started and ended since the last call: the queued events in
    /// their order, then a scan of `/proc` if one is due; then the binaries
    /// unused for [`KEEP_UNUSED`].
    pub fn changes(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        for queued in std::mem::take(&mut self.queued) {
            match queued {
                Queued::Exec { pid, at_ns } => self.scan.exec(pid, at_ns, &mut changes),
                Queued::Exit { pid, at_ns } => self.scan.exit(pid, at_ns, &mut changes),
            }
        }
        if Instant::now() >= self.next_scan {
            self.scan.scan(&mut changes);
            self.next_scan = Instant::now() + self.every;
        }
        self.scan.unused(KEEP_UNUSED, &mut changes);
        changes
    }

    /// `PROCESS_LOST` grew since the last look (one warning the first time).
    fn lost_grew(&mut self) -> bool {
        let Some(map) = &self.lost else { return false };
        let now: u64 = map.get(&0, 0).map(|per_cpu| per_cpu.iter().sum()).unwrap_or(0);
        if now <= self.lost_seen {
            return false;
        }
        if self.lost_seen == 0 {
            tracing::warn!("process exec/exit events lost (ring buffer full); rescanning /proc whenever that happens");
        }
        self.lost_seen = now;
        true
    }
}

/// Loads and attaches both programs; on failure nothing stays attached.
fn attach(ebpf: &mut Ebpf, tracefs: &Path) -> Result<PerCpuArray<MapData, u64>, LifecycleError> {
    let mut links: Vec<(&'static str, TracePointLinkId)> = Vec::new();
    let attached = (|| {
        for (name, category, tracepoint) in TRACEPOINTS {
            // Only the current task is read, no field: the format says the
            // tracepoint exists and is what the kernel calls it.
            Format::read(tracefs, category, tracepoint)?;
            let err = |e: ProgramError| LifecycleError::Program(name, chain(&e));
            let program: &mut TracePoint =
                ebpf.program_mut(name).ok_or(LifecycleError::MissingProgram(name))?.try_into().map_err(err)?;
            program.load().map_err(err)?;
            links.push((name, program.attach(category, tracepoint).map_err(err)?));
        }
        Ok(PerCpuArray::try_from(ebpf.take_map(LOST_MAP).ok_or(LifecycleError::MissingMap)?)?)
    })();
    if attached.is_err() {
        for (name, link) in links {
            if let Some(Ok(program)) = ebpf.program_mut(name).map(<&mut TracePoint>::try_from) {
                let _ = program.detach(link);
            }
        }
    }
    attached
}
