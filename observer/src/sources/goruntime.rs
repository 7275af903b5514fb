//! Go GC cycles: finds Go processes (by build info), attaches a uprobe scoped
//! to each one at `runtime.gcMarkTermination`'s entry, tells the program where
//! that process keeps the GC cycle count, and drops all of it when the process
//! ends.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
    programs::{ProgramError, UProbe, uprobe::UProbeLinkId, uprobe::UProbeScope},
};
use observer_common::goruntime::{GO_CYCLES_KNOWN, GO_GC_CYCLE_KNOWN, GoGcEvent, GoProcess};
use observer_common::{EventKind, process::ProcessEvent};

use crate::process::{
    discovery::{BinaryId, Change, first_mapping, monotonic_ns},
    gobinary::{GC_MARK_TERMINATION, GoBinary, WORK},
    layout::{self, GoRelease, RuntimeLayout},
    lifecycle::ProcessWatch,
    selector::GoProcessSelection,
};

const PROGRAM: &str = "go_gc_mark_termination";
const MAP: &str = "GO_PROCS";
/// Events of an ended process may still sit in the ring buffer: keep what
/// decoding them needs this long.
const KEEP_ENDED: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum GoRuntimeError {
    #[error("program {PROGRAM} missing from the eBPF object")]
    MissingProgram,
    #[error("map {MAP} missing from the eBPF object")]
    MissingMap,
    #[error("loading {PROGRAM}: {0}")]
    Program(#[from] ProgramError),
    #[error("map {MAP}: {0}")]
    Map(#[from] aya::maps::MapError),
}

/// What the events of one process are decorated with.
#[derive(Debug, Clone)]
pub struct GoProcessInfo {
    pub go_version: String,
    pub main_module: Option<String>,
}

struct Watched {
    info: GoProcessInfo,
    link: Option<UProbeLinkId>,
}

pub struct GoRuntimeSource {
    /// New and ended processes (kernel events, `/proc` scans).
    processes: ProcessWatch,
    /// Which Go processes get probes.
    selection: GoProcessSelection,
    /// Per binary, read once while a process runs it: `None` for binaries that are not Go (or unreadable).
    binaries: HashMap<BinaryId, Option<Arc<GoBinary>>>,
    watched: HashMap<u32, Watched>,
    ended: Vec<(Instant, u32, GoProcessInfo)>,
    /// Binaries already warned about, so each problem is said once.
    warned: HashSet<BinaryId>,
    procs: BpfHashMap<MapData, u32, GoProcess>,
}

impl GoRuntimeSource {
    /// Loads the programs and starts following processes (the first
    /// [`GoRuntimeSource::poll`] scans `/proc`).
    pub fn new(ebpf: &mut Ebpf, tracefs: &Path, selection: GoProcessSelection) -> Result<Self, GoRuntimeError> {
        let procs = BpfHashMap::try_from(ebpf.take_map(MAP).ok_or(GoRuntimeError::MissingMap)?)?;
        program(ebpf)?.load()?;
        Ok(Self {
            processes: ProcessWatch::start(ebpf, tracefs),
            selection,
            binaries: HashMap::new(),
            watched: HashMap::new(),
            ended: Vec::new(),
            warned: HashSet::new(),
            procs,
        })
    }

    /// Number of Go processes being watched.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// How new processes are found, for the ready line.
    pub fn discovery(&self) -> &'static str {
        self.processes.mechanism()
    }

    /// Takes a process exec or exit event from the ring buffer; the next
    /// [`GoRuntimeSource::poll`] acts on it.
    pub fn process_event(&mut self, kind: EventKind, event: &ProcessEvent) {
        self.processes.queue(kind, event);
    }

    /// Whether [`GoRuntimeSource::poll`] has anything to do.
    pub fn due(&mut self) -> bool {
        self.processes.due()
    }

    /// Attaches to new Go processes, detaches from ended ones, and lets go
    /// of binaries no process runs any more.
    pub fn poll(&mut self, ebpf: &mut Ebpf) {
        self.ended.retain(|(at, _, _)| at.elapsed() < KEEP_ENDED);
        for change in self.processes.changes() {
            match change {
                Change::Exited { pid, binary } => {
                    self.forget(ebpf, pid);
                    if !self.processes.in_use(&binary) {
                        self.binaries.remove(&binary);
                    }
                }
                Change::Started { pid, binary, exec_ns } => {
                    self.consider(ebpf, pid, binary);
                    if let Some(exec_ns) = exec_ns.filter(|_| self.watched.contains_key(&pid)) {
                        let after = Duration::from_nanos(monotonic_ns().saturating_sub(exec_ns));
                        tracing::debug!("go: pid {pid} attached {} us after its exec", after.as_micros());
                    }
                }
            }
        }
    }

    /// Whether `--go-process` selects this Go process.
    fn selected(&self, pid: u32, go: &GoBinary) -> bool {
        let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        self.selection.0.is_empty() || self.selection.matches(pid, comm().trim_end(), go.build.main_module.as_deref())
    }

    /// Process info for an event of `pid`, also shortly after it ended.
    pub fn info(&self, pid: u32) -> Option<&GoProcessInfo> {
        self.watched
            .get(&pid)
            .map(|w| &w.info)
            .or_else(|| self.ended.iter().rev().find(|(_, p, _)| *p == pid).map(|(_, _, info)| info))
    }

    pub fn cycle(raw: &GoGcEvent) -> Option<u32> {
        (raw.flags & GO_GC_CYCLE_KNOWN != 0).then_some(raw.cycle)
    }

    fn forget(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let Some(watched) = self.watched.remove(&pid) else { return };
        if let Some(link) = watched.link {
            match program(ebpf) {
                Ok(prog) => {
                    if let Err(err) = prog.detach(link) {
                        tracing::warn!("detaching {GC_MARK_TERMINATION} from pid {pid}: {err}");
                    }
                }
                Err(err) => tracing::warn!("{err}"),
            }
        }
        // Absent already is fine: the entry may never have been written.
        let _ = self.procs.remove(&pid);
        self.ended.push((Instant::now(), pid, watched.info));
        eprintln!("observer: go: detached pid={pid}");
    }

    fn consider(&mut self, ebpf: &mut Ebpf, pid: u32, binary: BinaryId) {
        if self.watched.contains_key(&pid) {
            self.forget(ebpf, pid);
        }
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let go = self
            .binaries
            .entry(binary)
            .or_insert_with(|| match GoBinary::open(&exe) {
                Ok(go) => go.map(Arc::new),
                Err(err) => {
                    tracing::debug!("pid {pid}: {err}");
                    None
                }
            })
            .clone();
        let Some(go) = go else { return };
        if !self.selected(pid, &go) {
            return;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
        let Some(offset) = go.gc_mark_termination else {
            if self.warned.insert(binary) {
                let why = if go.stripped { " (stripped binary; not found in .gopclntab either)" } else { "" };
                tracing::warn!(
                    "Go process {pid} ({comm}, {}): no symbol {GC_MARK_TERMINATION}{why}; its GC cycles are not traced",
                    go.build.go_version
                );
            }
            return;
        };
        let cycles = self.cycles_address(pid, binary, &go, &comm);
        let entry = GoProcess {
            cycles_addr: cycles.map_or(0, |(addr, _)| addr),
            flags: if cycles.is_some() { GO_CYCLES_KNOWN } else { 0 },
            _pad: 0,
        };
        // The entry first: the program ignores hits of processes without one.
        if let Err(err) = self.procs.insert(pid, entry, 0) {
            tracing::warn!("Go process {pid} ({comm}): {MAP} full or unusable ({err}); not traced");
            return;
        }
        let link = NonZeroU32::new(pid).ok_or(()).and_then(|nz| {
            program(ebpf).map_err(|err| tracing::warn!("{err}")).and_then(|prog| {
                prog.attach(offset, &exe, UProbeScope::OneProcess(nz))
                    .map_err(|err| tracing::debug!("pid {pid}: attaching {GC_MARK_TERMINATION}: {err}"))
            })
        });
        let info = GoProcessInfo { go_version: go.build.go_version.clone(), main_module: go.build.main_module.clone() };
        let Ok(link) = link else {
            // Most likely the process ended in between.
            let _ = self.procs.remove(&pid);
            return;
        };
        eprintln!(
            "observer: go: attached pid={pid} comm={comm} version={} module={} layout={}",
            info.go_version,
            info.main_module.as_deref().unwrap_or("-"),
            cycles.map_or("none", |(_, source)| source.as_str())
        );
        self.watched.insert(pid, Watched { info, link: Some(link) });
    }

    /// Where `work.cycles` lives in `pid` and where its offset came from,
    /// or `None` after one warning naming the process and what is missing.
    fn cycles_address(&mut self, pid: u32, binary: BinaryId, go: &GoBinary, comm: &str) -> Option<(u64, LayoutSource)> {
        let missing = match (go.work, runtime_layout(go)) {
            (None, _) if go.stripped => {
                format!("no symbol {WORK} (stripped binary: its .gopclntab lists functions only, not data)")
            }
            (None, _) => format!("no symbol {WORK}"),
            (Some(_), Err(missing)) => missing,
            (Some(work), Ok((layout, source))) => {
                let mapping = if go.pie { first_mapping(pid, binary) } else { Some((0, 0)) };
                match mapping.and_then(|(start, off)| go.relocate(work + layout.work_cycles, start, off)) {
                    Some(addr) => return Some((addr, source)),
                    None => "cannot find its load address in /proc/PID/maps".to_string(),
                }
            }
        };
        if self.warned.insert(binary) {
            tracing::warn!(
                "Go process {pid} ({comm}, {}): {missing}; its GC events carry no cycle number",
                go.build.go_version
            );
        }
        None
    }
}

/// Where a process's runtime layout came from, for the attach message.
#[derive(Debug, Clone, Copy)]
enum LayoutSource {
    Dwarf,
    Table,
}

impl LayoutSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Dwarf => "dwarf",
            Self::Table => "table",
        }
    }
}

/// The binary's own DWARF first; the per-release table for binaries
/// without it. `Err` says what is missing.
fn runtime_layout(go: &GoBinary) -> Result<(RuntimeLayout, LayoutSource), String> {
    let no_dwarf = match &go.dwarf_layout {
        Ok(layout) => return Ok((*layout, LayoutSource::Dwarf)),
        Err(err) => err,
    };
    GoRelease::parse(&go.build.go_version)
        .and_then(layout::for_release)
        .map(|layout| (layout, LayoutSource::Table))
        .ok_or_else(|| {
            format!(
                "{no_dwarf}, and no runtime layout for {} in the table (known: {}): unsupported Go version",
                go.build.go_version,
                layout::known_releases()
            )
        })
}

fn program(ebpf: &mut Ebpf) -> Result<&mut UProbe, GoRuntimeError> {
    Ok(ebpf.program_mut(PROGRAM).ok_or(GoRuntimeError::MissingProgram)?.try_into()?)
}
