//! Go runtime events: finds Go processes (by build info), attaches uprobes
//! (GC cycle end, mark assists, heap growth, memory returned to the OS) once
//! per binary, tells the programs where each watched process keeps the GC
//! figures (its `GO_PROCS` entry), and drops the entry when the process ends.
//! Each process it attaches to gets one `go.attach` record (its binary, Go
//! version and memory settings); its small scavenger calls are counted in
//! the kernel and reported once a second (`go.scavenge.summary`).
//!
//! The probes of a binary fire for every process that runs it: the programs
//! do nothing for a process without a `GO_PROCS` entry, so the processes of
//! a watched binary that `--go-process` leaves out (or that started before
//! an entry was written) cost a trap and a map lookup per probe hit, and
//! send nothing. Attaching per binary rather than per process is what keeps
//! churn cheap: the kernel removes uprobes one at a time (0.1 s each on a
//! busy machine), so a new process of a binary already probed needs only its
//! entry, and a binary's links are closed only once no watched process has
//! run it for [`LINGER`]. A binary never has two live link sets (that would
//! double every event): a process of a binary whose links are still being
//! closed waits for the close to end, then gets a fresh set. One file can
//! still have two sets where it has two identities (one image layer under
//! two overlay mounts: the kernel probes the file beneath, `/proc/PID/exe`
//! shows two): each set's links carry its number as their cookie, and a
//! process's entry names the set its hits count through.

use std::{
    collections::{HashMap, HashSet},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap},
    programs::{
        ProgramError, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use observer_common::{
    EventKind,
    goruntime::{
        GO_ASSIST_DURATION_KNOWN, GO_ASSIST_TIMED, GoAssistEvent, GoGcEvent, GoHeapEvent, GoKnown, GoProcess,
        SCAVENGE_EVENT_MIN_BYTES, ScavengeCounts, field,
    },
    process::{BinaryKey, ProcessEvent},
};

use crate::cgroup::CgroupPaths;
use crate::event::{
    Attribution, CgroupSource, Event, GoAssist, GoAttach, GoGc, GoHeapChange, GoOwner, GoScavengeSummary, Record,
};
use crate::export::metrics::SourceMetric;
use crate::kernel::{clock::monotonic_ns, closer::Closer};
use crate::process::{
    discovery::{BinaryId, Change, first_mapping},
    environ::GoEnv,
    gobinary::{
        self, FREE_STACK_SPANS, GC_ASSIST_ALLOC, GC_ASSIST_ALLOC1, GoBinary, MCACHE_ALLOC_LARGE, MCACHE_REFILL,
        MPROF_MALLOC, PAGE_ALLOC_GROW, SYS_UNUSED_OS,
    },
    layout::{self, Global, GoRelease, RuntimeLayout},
    lifecycle::ProcessWatch,
    selector::GoProcessSelection,
};
use crate::profile::maps::ProcessMaps;
use crate::sources::{comm, read};

/// (program, runtime function it is attached to at entry).
const ENTRY_PROBES: [(&str, &str); 5] = [
    ("go_gc_end", FREE_STACK_SPANS),
    ("go_assist_start", GC_ASSIST_ALLOC),
    ("go_assist_work", GC_ASSIST_ALLOC1),
    ("go_heap_grow", PAGE_ALLOC_GROW),
    ("go_scavenge", SYS_UNUSED_OS),
];
/// Attached at each return instruction of `runtime.gcAssistAlloc`.
const ASSIST_END: &str = "go_assist_end";
/// Allocation samples (`observer-ebpf`'s `alloc.rs`): the runtime's own
/// (`mProf_Malloc`, its size argument the second before Go 1.23), or span
/// refills and large allocations where the linker turned those off.
const ALLOC_SAMPLED: (&str, &str) = ("go_alloc_sampled", MPROF_MALLOC);
const ALLOC_SAMPLED_2: (&str, &str) = ("go_alloc_sampled_2", MPROF_MALLOC);
const ALLOC_SPANS: [(&str, &str); 2] = [("go_alloc_span", MCACHE_REFILL), ("go_alloc_large", MCACHE_ALLOC_LARGE)];
const PROGRAMS: [&str; 10] = [
    "go_gc_end",
    "go_assist_start",
    "go_assist_work",
    "go_heap_grow",
    "go_scavenge",
    ASSIST_END,
    ALLOC_SAMPLED.0,
    ALLOC_SAMPLED_2.0,
    ALLOC_SPANS[0].0,
    ALLOC_SPANS[1].0,
];
const MAP: &str = "GO_PROCS";
const SCAVENGE_MAP: &str = "GO_SCAVENGE_COUNTS";
const KNOWN_MAP: &str = "GO_KNOWN";
/// Events of an ended process may still sit in the ring buffer: keep what
/// decoding them needs this long.
const KEEP_ENDED: Duration = Duration::from_secs(5);
/// A binary's links stay this long after its last watched process ended,
/// for the next process of it (a restart, a job run over and over).
const LINGER: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum GoRuntimeError {
    #[error("program {0} missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map {0} missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("loading the Go runtime programs: {0}")]
    Program(#[from] ProgramError),
    #[error("map {MAP}, {SCAVENGE_MAP} or {KNOWN_MAP}: {0}")]
    Map(#[from] aya::maps::MapError),
}

/// What the events of one process are decorated with.
#[derive(Debug, Clone)]
pub struct GoProcessInfo {
    pub go_version: String,
    pub main_module: Option<String>,
    /// For the records made in userspace (summaries, `go.attach`), which
    /// have no kernel context: read when the agent attached.
    pub comm: String,
    pub cgroup_id: Option<u64>,
}

/// A `go.attach` to report at the next tick (records made in userspace
/// need the tick's cgroup lookups).
struct Attached {
    ts_ns: u64,
    pid: u32,
    executable: Option<String>,
    layout: &'static str,
    probes: usize,
    alloc_sampling: AllocSampling,
    mappings: Option<Arc<ProcessMaps>>,
    env: GoEnv,
    watched_from: &'static str,
    cycles_at_attach: Option<u32>,
}

struct Watched {
    info: GoProcessInfo,
    binary: BinaryId,
}

/// The probes of one binary, shared by its watched processes.
struct Probed {
    /// The set's number, its links' cookie.
    set: u32,
    /// (program, link) of every probe attached.
    links: Vec<(&'static str, UProbeLinkId)>,
    /// Since when no watched process runs the binary.
    idle_since: Option<Instant>,
}

/// A process to watch once the links of its binary are closed.
struct Waiting {
    pid: u32,
    binary: BinaryId,
    exec_ns: Option<u64>,
}

/// What was read of a binary. A Go binary is read in full (symbols, DWARF)
/// only once a process `--go-process` selects runs it: reading a 170 MB
/// kube-apiserver nobody asked for would cost seconds and megabytes.
enum Read {
    /// Not a Go program, or unreadable.
    NotGo,
    /// Go; only its build info, what the selection needs.
    BuildInfo { main_module: Option<String> },
    /// Go; everything the probes need.
    Full(Arc<GoBinary>),
}

impl Read {
    fn build_info(exe: &Path, pid: u32) -> Read {
        Self::of(gobinary::build_info(exe), pid, |build| Read::BuildInfo { main_module: build.main_module })
    }

    fn full(exe: &Path, pid: u32) -> Read {
        Self::of(GoBinary::open(exe), pid, |go| Read::Full(Arc::new(go)))
    }

    /// `NotGo` for a file that is not Go or could not be read.
    fn of<T>(read: Result<Option<T>, gobinary::GoBinaryError>, pid: u32, go: impl FnOnce(T) -> Read) -> Read {
        match read {
            Ok(Some(found)) => go(found),
            Ok(None) => Read::NotGo,
            Err(err) => {
                tracing::debug!("pid {pid}: {err}");
                Read::NotGo
            }
        }
    }
}

pub struct GoRuntimeSource {
    /// New and ended processes (kernel events, `/proc` scans).
    processes: ProcessWatch,
    /// Which Go processes get probes.
    selection: GoProcessSelection,
    /// Allocation probes too (`--alloc-profiles`).
    alloc_profiles: bool,
    /// Closes the links of unused binaries off the event loop.
    closer: Closer,
    /// Binaries whose links are being closed, with their token.
    closing: HashMap<BinaryId, u64>,
    next_token: u64,
    /// Binaries with probes attached.
    probed: HashMap<BinaryId, Probed>,
    /// The number of the last probe set attached.
    last_set: u32,
    /// Links carry their set as a cookie (5.15+). Without, every set's
    /// links fire for every process of the file: one file under two
    /// identities then counts twice (README, "Kernels").
    cookies: bool,
    /// New processes of binaries in `closing`, in the order they came.
    waiting: Vec<Waiting>,
    /// Per binary, what was read of it, kept while processes run it (and a
    /// while after).
    binaries: HashMap<BinaryId, Read>,
    watched: HashMap<u32, Watched>,
    ended: Vec<(Instant, u32, GoProcessInfo)>,
    /// Binaries already warned about, so each problem is said once.
    warned: HashSet<BinaryId>,
    procs: BpfHashMap<MapData, u32, GoProcess>,
    /// Binaries whose new processes the exec program watches itself.
    known: BpfHashMap<MapData, BinaryKey, GoKnown>,
    /// Processes the exec program watched from their start (the agent found
    /// the entry it would have written).
    watched_from_exec: u64,
    /// Entries the exec program wrote that differed from the agent's (then
    /// replaced): a wrong load bias or file, never expected.
    exec_mismatches: u64,
    /// Processes whose first `go.gc` was decoded (it says how many cycles
    /// ran before).
    gc_seen: HashSet<u32>,
    /// Scavenger calls not sent as events, per process, counted in the kernel.
    scavenge_counts: PerCpuHashMap<MapData, u32, ScavengeCounts>,
    /// (calls, bytes) last reported per process.
    scavenge_seen: HashMap<u32, (u64, u64)>,
    /// Scavenger calls under the event size sent as events: the kernel's
    /// table had no room for their process (large ones sent for that reason
    /// are not told apart).
    scavenge_unsummarized: u64,
    attached: Vec<Attached>,
    /// Probes that failed to attach (the binary's probes then all go).
    attach_errors: u64,
    /// The cgroup2 mount, to read a process's cgroup at attach.
    cgroup2: Option<PathBuf>,
}

impl GoRuntimeSource {
    /// Loads the programs and starts following processes (the first
    /// [`GoRuntimeSource::poll`] scans `/proc`).
    pub fn new(
        ebpf: &mut Ebpf,
        tracefs: &Path,
        selection: GoProcessSelection,
        cookies: bool,
        alloc_profiles: bool,
    ) -> Result<Self, GoRuntimeError> {
        let procs = BpfHashMap::try_from(ebpf.take_map(MAP).ok_or(GoRuntimeError::MissingMap(MAP))?)?;
        let known = BpfHashMap::try_from(ebpf.take_map(KNOWN_MAP).ok_or(GoRuntimeError::MissingMap(KNOWN_MAP))?)?;
        let scavenge_counts =
            PerCpuHashMap::try_from(ebpf.take_map(SCAVENGE_MAP).ok_or(GoRuntimeError::MissingMap(SCAVENGE_MAP))?)?;
        for name in PROGRAMS {
            program(ebpf, name)?.load()?;
        }
        Ok(Self {
            processes: ProcessWatch::start(ebpf, tracefs),
            selection,
            alloc_profiles,
            closer: Closer::new(),
            closing: HashMap::new(),
            next_token: 0,
            probed: HashMap::new(),
            last_set: 0,
            cookies,
            waiting: Vec::new(),
            binaries: HashMap::new(),
            watched: HashMap::new(),
            ended: Vec::new(),
            warned: HashSet::new(),
            procs,
            known,
            watched_from_exec: 0,
            exec_mismatches: 0,
            gc_seen: HashSet::new(),
            scavenge_counts,
            scavenge_seen: HashMap::new(),
            scavenge_unsummarized: 0,
            attached: Vec::new(),
            attach_errors: 0,
            cgroup2: std::fs::read_to_string("/proc/self/mountinfo")
                .ok()
                .and_then(|m| crate::cgroup::cgroup2_mount(&m)),
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

    /// How new processes are found, in full, for the `go.processes` verdict.
    pub fn discovery_text(&self) -> String {
        match self.processes.mechanism() {
            "/proc polling" => "/proc polled every 250 ms (no sched_process_exec/exit tracepoints)".into(),
            _ => "tracepoints sched:sched_process_exec/exit, /proc rescanned every 5 s".into(),
        }
    }

    /// Takes a process exec or exit event from the ring buffer; the next
    /// [`GoRuntimeSource::poll`] acts on it.
    pub fn process_event(&mut self, kind: EventKind, event: &ProcessEvent) {
        self.processes.queue(kind, event);
    }

    /// Whether [`GoRuntimeSource::poll`] has anything to do.
    pub fn due(&mut self) -> bool {
        self.processes.due() || !self.closing.is_empty() || self.probed.values().any(|p| p.idle_since.is_some())
    }

    /// Attaches to new Go processes, detaches from ended ones, closes the
    /// links of binaries no watched process has run for [`LINGER`], and
    /// lets go of binaries no process has run for a while.
    pub fn attach_changes(&mut self, ebpf: &mut Ebpf) {
        self.ended.retain(|(at, _, _)| at.elapsed() < KEEP_ENDED);
        let mut closed = Vec::new();
        for token in self.closer.closed() {
            if let Some(binary) = self.closing.iter().find_map(|(&b, &t)| (t == token).then_some(b)) {
                self.closing.remove(&binary);
                closed.push(binary);
            }
        }
        // Closing links competes with attaching for a kernel lock: none starts meanwhile.
        let attaching = self.closer.hold();
        for binary in closed {
            let (now, later) = std::mem::take(&mut self.waiting).into_iter().partition(|w| w.binary == binary);
            self.waiting = later;
            for Waiting { pid, binary, exec_ns } in now {
                self.start(ebpf, pid, binary, exec_ns);
            }
        }
        for change in self.processes.changes() {
            match change {
                Change::Exited { pid, .. } => self.let_go(pid),
                Change::Unused { binary } => {
                    self.binaries.remove(&binary);
                }
                Change::Started { pid, binary, exec_ns } => self.start(ebpf, pid, binary, exec_ns),
            }
        }
        drop(attaching);
        let (watched, ended) = (&self.watched, &self.ended);
        self.gc_seen.retain(|pid| watched.contains_key(pid) || ended.iter().any(|(_, p, _)| p == pid));
        let unused: Vec<BinaryId> = self
            .probed
            .iter()
            .filter(|(_, p)| p.idle_since.is_some_and(|at| at.elapsed() >= LINGER))
            .map(|(&binary, _)| binary)
            .collect();
        for binary in unused {
            if let Some(probed) = self.probed.remove(&binary) {
                self.close(ebpf, binary, probed.links);
            }
        }
    }

    /// Hands the links of `binary` to the closing thread (a uprobe's removal
    /// waits for the kernel); until they are closed, new processes of the
    /// binary wait.
    fn close(&mut self, ebpf: &mut Ebpf, binary: BinaryId, links: Vec<(&'static str, UProbeLinkId)>) {
        // Absent is fine: not every binary is registered.
        let _ = self.known.remove(&BinaryKey::from_stat(binary.dev, binary.ino));
        let mut owned = Vec::with_capacity(links.len());
        for (name, id) in links {
            match program(ebpf, name).map(|p| p.take_link(id)) {
                Ok(Ok(link)) => owned.push(link),
                Ok(Err(err)) => tracing::warn!("detaching {name} from {binary:?}: {err}"),
                Err(err) => tracing::warn!("{err}"),
            }
        }
        self.next_token += 1;
        self.closing.insert(binary, self.next_token);
        self.closer.close(owned, self.next_token);
    }

    /// Watches a new process if it is a selected Go process.
    fn start(&mut self, ebpf: &mut Ebpf, pid: u32, binary: BinaryId, exec_ns: Option<u64>) {
        self.consider(ebpf, pid, binary, exec_ns);
        if let Some(exec_ns) = exec_ns.filter(|_| self.watched.contains_key(&pid)) {
            let after = Duration::from_nanos(monotonic_ns().saturating_sub(exec_ns));
            tracing::debug!("go: pid {pid} attached {} us after its exec", after.as_micros());
        }
    }

    /// Detaches from an ended process (or one waiting to be attached).
    fn let_go(&mut self, pid: u32) {
        self.waiting.retain(|w| w.pid != pid);
        self.forget(pid);
    }

    /// Process info for an event of `pid`, also shortly after it ended.
    pub fn info(&self, pid: u32) -> Option<&GoProcessInfo> {
        self.watched
            .get(&pid)
            .map(|w| &w.info)
            .or_else(|| self.ended.iter().rev().find(|(_, p, _)| *p == pid).map(|(_, _, info)| info))
    }

    /// Removes the process's entry (its binary's probes then do nothing
    /// for it); the binary's links wait [`LINGER`] for another process.
    fn forget(&mut self, pid: u32) {
        let Some(watched) = self.watched.remove(&pid) else { return };
        // Absent already is fine: the entry may never have been written.
        let _ = self.procs.remove(&pid);
        self.ended.push((Instant::now(), pid, watched.info));
        crate::view::console::line(&format!("observer: go: detached pid={pid}"));
        if !self.watched.values().any(|w| w.binary == watched.binary)
            && let Some(probed) = self.probed.get_mut(&watched.binary)
        {
            probed.idle_since = Some(Instant::now());
        }
    }

    fn consider(&mut self, ebpf: &mut Ebpf, pid: u32, binary: BinaryId, exec_ns: Option<u64>) {
        self.waiting.retain(|w| w.pid != pid);
        if self.watched.contains_key(&pid) {
            self.forget(pid);
        }
        if self.closing.contains_key(&binary) {
            // Never two link sets for one binary: a fresh one once this is closed.
            self.waiting.push(Waiting { pid, binary, exec_ns });
            return;
        }
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim_end().to_string();
        let read = self.binaries.entry(binary).or_insert_with(|| Read::build_info(&exe, pid));
        let selected = match read {
            Read::NotGo => return,
            Read::BuildInfo { main_module } => self.selection.matches(pid, &comm, main_module.as_deref()),
            Read::Full(go) => self.selection.matches(pid, &comm, go.build.main_module.as_deref()),
        };
        if !selected {
            return;
        }
        if matches!(read, Read::BuildInfo { .. }) {
            *read = Read::full(&exe, pid);
        }
        let Read::Full(go) = read else { return };
        let go = Arc::clone(go);
        // Everything this binary lacks, said once in one warning.
        let mut problems = Vec::new();
        let located = link_addresses(&go).and_then(|(link, source, missing)| {
            Ok((link, process_addresses(&go, &link, pid, binary)?, source, missing))
        });
        let (link, addrs, source) = match located {
            Ok((link, addrs, source, missing)) => {
                if !missing.is_empty() {
                    problems.push(format!(
                        "no offset for {} (runtime layout from {}); its go.gc events go without {}",
                        missing.join(", "),
                        source.describe(),
                        if missing.len() == 1 { "that figure" } else { "those figures" }
                    ));
                }
                (link, addrs, Some(source))
            }
            Err(why) => {
                problems.push(format!("{why}; its go.gc events carry no cycle number or heap figures"));
                ([0; field::SLOTS], [0; field::SLOTS], None)
            }
        };
        let mut probes: Vec<(&'static str, u64)> = Vec::new();
        for (prog, function) in ENTRY_PROBES {
            match go.probes.get(function) {
                Some(&offset) => probes.push((prog, offset)),
                None => {
                    let why = if go.stripped { " (stripped binary; not in .gopclntab either)" } else { "" };
                    problems.push(format!("no function {function}{why}; its {} events are missing", event_of(prog)));
                }
            }
        }
        let alloc_sampling = match self.alloc_profiles.then(|| alloc_probes(&go)) {
            None => AllocSampling::None,
            Some(Ok((sampling, found))) => {
                probes.extend(found);
                sampling
            }
            Some(Err(why)) => {
                problems.push(format!("{why}; it has no allocation profile"));
                AllocSampling::None
            }
        };
        let (mut link, mut addrs) = (link, addrs);
        if let (AllocSampling::MemProfile, Some(at)) = (alloc_sampling, go.mem_profile.rate_at) {
            // Read with each of the runtime's samples, by the kernel.
            link[field::MEM_PROFILE_RATE] = at;
            addrs[field::MEM_PROFILE_RATE] = process_address(&go, at, pid, binary).unwrap_or(0);
        }
        let mut flags = 0;
        if go.probes.contains_key(GC_ASSIST_ALLOC) {
            match &go.assist_returns {
                Ok(returns) => {
                    flags |= GO_ASSIST_TIMED;
                    probes.extend(returns.iter().map(|&at| (ASSIST_END, at)));
                }
                Err(why) => problems.push(format!("{why}: its go.assist events are counts without durations")),
            }
        }
        if !problems.is_empty() && self.warned.insert(binary) {
            tracing::warn!("Go process {pid} ({comm}, {}): {}", go.build.go_version, problems.join("; "));
        }
        if probes.is_empty() {
            return;
        }
        let set = self.probed.get(&binary).map_or(self.last_set.wrapping_add(1).max(1), |p| p.set);
        let entry = GoProcess { addrs, flags, set };
        let at_exec = self.procs.get(&pid, 0).ok();
        let from_exec = at_exec == Some(entry);
        if at_exec.is_some_and(|e| e.set == set && !from_exec) {
            // Replaced below: the agent's own reading of the process wins.
            self.exec_mismatches += 1;
            tracing::warn!(
                "Go process {pid} ({comm}): the entry written at its exec differs from the agent's: {at_exec:?}, not {entry:?}"
            );
        }
        // The entry first: the programs ignore hits of processes without one.
        if let Err(err) = self.procs.insert(pid, entry, 0) {
            tracing::warn!("Go process {pid} ({comm}): {MAP} full or unusable ({err}); not traced");
            return;
        }
        let attached = match self.probed.get_mut(&binary) {
            Some(probed) => {
                probed.idle_since = None;
                Some(probed.links.len())
            }
            None => {
                let links = self.attach(ebpf, pid, binary, set, probes);
                if links.is_some() {
                    // Once per link set: the same for every process of the binary.
                    self.register_at_exec(binary, &go, GoProcess { addrs: link, flags, set });
                }
                links
            }
        };
        let Some(links) = attached else {
            let _ = self.procs.remove(&pid);
            return;
        };
        self.watched_from_exec += u64::from(from_exec);
        let cycles_at_attach = (!from_exec).then(|| read_u32(pid, addrs[field::CYCLES])).flatten();
        let layout = source.map_or("none", LayoutSource::as_str);
        crate::view::console::line(&format!(
            "observer: go: attached pid={pid} comm={comm} version={} module={} layout={layout} probes={links}",
            go.build.go_version,
            go.build.main_module.as_deref().unwrap_or("-"),
        ));
        self.attached.push(Attached {
            ts_ns: monotonic_ns(),
            pid,
            executable: std::fs::read_link(&exe).ok().map(|p| crate::export::live::printable(&p.to_string_lossy())),
            layout,
            probes: links,
            alloc_sampling,
            mappings: ProcessMaps::read(pid).ok().map(Arc::new),
            env: GoEnv::of_process(pid),
            watched_from: if from_exec { "exec" } else { "attach" },
            cycles_at_attach,
        });
        let cgroup_id = self.cgroup2.as_deref().and_then(|root| crate::cgroup::process_cgroup_id(root, pid));
        let info = GoProcessInfo {
            go_version: go.build.go_version.clone(),
            main_module: go.build.main_module.clone(),
            comm,
            cgroup_id,
        };
        self.watched.insert(pid, Watched { info, binary });
    }

    /// Attaches the probes of `binary` for all its processes, reading it
    /// through `pid`'s executable; all or nothing. The number of links.
    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
        binary: BinaryId,
        set: u32,
        probes: Vec<(&'static str, u64)>,
    ) -> Option<usize> {
        // Held open and checked, so that the probes go where `binary` is
        // even if the process exec'd something else meanwhile.
        let exe = std::fs::File::open(format!("/proc/{pid}/exe"))
            .and_then(|f| f.metadata().map(|m| (BinaryId { dev: m.dev(), ino: m.ino() }, f)))
            .map_err(|err| tracing::debug!("pid {pid}: its executable: {err}"))
            .ok()
            .filter(|(id, _)| *id == binary)?
            .1;
        let path = PathBuf::from(format!("/proc/self/fd/{}", exe.as_raw_fd()));
        let mut links = Vec::with_capacity(probes.len());
        let cookie = self.cookies.then_some(u64::from(set));
        for (prog, offset) in probes {
            let attached = program(ebpf, prog).map_err(|err| tracing::warn!("{err}")).and_then(|p| {
                let point = UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(offset), cookie };
                p.attach(point, &path, UProbeScope::AllProcesses)
                    .map_err(|err| tracing::debug!("pid {pid}: attaching {prog} at {offset:#x}: {err}"))
            });
            match attached {
                Ok(link) => links.push((prog, link)),
                Err(()) => {
                    self.attach_errors += 1;
                    if !links.is_empty() {
                        self.close(ebpf, binary, links);
                    }
                    return None;
                }
            }
        }
        let count = links.len();
        self.last_set = set;
        self.probed.insert(binary, Probed { set, links, idle_since: None });
        Some(count)
    }

    /// Lets the exec program watch new processes of `binary` itself, where
    /// every process of it is selected and its load address can be found
    /// from the kernel's `mm->start_code`.
    fn register_at_exec(&mut self, binary: BinaryId, go: &GoBinary, link_time: GoProcess) {
        if !self.selection.selects_every_process_of(go.build.main_module.as_deref()) {
            return;
        }
        let Some(exec_vaddr) = go.exec_vaddr else { return };
        let known = GoKnown { entry: link_time, pie: u32::from(go.pie), _pad: 0, exec_vaddr };
        if let Err(err) = self.known.insert(BinaryKey::from_stat(binary.dev, binary.ino), known, 0) {
            tracing::debug!("{KNOWN_MAP}: {err}; new processes of {binary:?} are watched once the agent gets to them");
        }
    }
}

/// Link-time addresses of each GC figure (0: no offset), where the offsets
/// came from and the figures without one; `Err` says why none can be read.
fn link_addresses(go: &GoBinary) -> Result<([u64; field::SLOTS], LayoutSource, Vec<String>), String> {
    let work = Global::Work.symbol();
    if !go.globals.contains_key(&Global::Work) {
        return Err(if go.stripped {
            format!("no symbol {work} (stripped binary: its .gopclntab lists functions only, not data)")
        } else {
            format!("no symbol {work}")
        });
    }
    let (layout, source) = runtime_layout(go)?;
    let mut link = [0; field::SLOTS];
    let mut missing = Vec::new();
    for (index, spec) in layout::FIELDS.iter().enumerate() {
        match go
            .globals
            .get(&spec.global)
            .zip(layout.offsets[index])
            .and_then(|(base, offset)| base.checked_add(offset))
        {
            Some(addr) => link[index] = addr,
            None => missing.push(layout::field_name(index)),
        }
    }
    Ok((link, source, missing))
}

/// The link-time addresses `link` where `pid` has `binary` loaded.
fn process_addresses(
    go: &GoBinary,
    link: &[u64; field::SLOTS],
    pid: u32,
    binary: BinaryId,
) -> Result<[u64; field::SLOTS], String> {
    if !go.pie {
        return Ok(*link);
    }
    let no_address = || "cannot find its load address in /proc/PID/maps".to_string();
    let (start, off) = first_mapping(pid, binary).ok_or_else(no_address)?;
    let mut addrs = [0; field::SLOTS];
    for (addr, &at) in addrs.iter_mut().zip(link).filter(|(_, at)| **at != 0) {
        *addr = go.relocate(at, start, off).ok_or_else(no_address)?;
    }
    Ok(addrs)
}

/// How a binary's allocations are sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AllocSampling {
    /// The runtime's own memory-profile samples.
    MemProfile,
    /// Span refills and large allocations (memory profiling linked out).
    Spans,
    None,
}

impl AllocSampling {
    fn as_str(self) -> &'static str {
        match self {
            Self::MemProfile => "memprofile",
            Self::Spans => "spans",
            Self::None => "none",
        }
    }
}

/// A program and the file offset it is attached at.
type Probe = (&'static str, u64);

/// The allocation probes of `go`: the runtime's own samples where the
/// linker left memory profiling on, else span refills and large
/// allocations (all or none: half a profile would mislead).
fn alloc_probes(go: &GoBinary) -> Result<(AllocSampling, Vec<Probe>), String> {
    let found = |(prog, function): (&'static str, &'static str)| {
        go.probes.get(function).map(|&at| (prog, at)).ok_or_else(|| format!("no function {function}"))
    };
    match go.mem_profile.disabled {
        Some(true) => {
            let probes = ALLOC_SPANS.into_iter().map(found).collect::<Result<Vec<_>, _>>()?;
            Ok((AllocSampling::Spans, probes))
        }
        // Not known (no flag found): the runtime's samples, if any come.
        Some(false) | None => {
            let old = GoRelease::parse(&go.build.go_version).is_some_and(|r| (r.major, r.minor) < (1, 23));
            Ok((AllocSampling::MemProfile, vec![found(if old { ALLOC_SAMPLED_2 } else { ALLOC_SAMPLED })?]))
        }
    }
}

/// Where link-time address `at` of `binary` is in `pid`.
fn process_address(go: &GoBinary, at: u64, pid: u32, binary: BinaryId) -> Option<u64> {
    if !go.pie {
        return Some(at);
    }
    let (start, off) = first_mapping(pid, binary)?;
    go.relocate(at, start, off)
}

/// A 4-byte value of `pid`'s memory at `addr` (0: an address not known).
fn read_u32(pid: u32, addr: u64) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    if addr == 0 {
        return None;
    }
    let mut buf = [0; 4];
    std::fs::File::open(format!("/proc/{pid}/mem")).and_then(|f| f.read_exact_at(&mut buf, addr)).ok()?;
    Some(u32::from_ne_bytes(buf))
}

/// The event a program sends, for messages.
fn event_of(program: &str) -> &'static str {
    match program {
        "go_gc_end" => "go.gc",
        "go_assist_start" | "go_assist_work" | ASSIST_END => "go.assist",
        "go_heap_grow" => "go.heap_grow",
        _ => "go.scavenge",
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

    fn describe(self) -> &'static str {
        match self {
            Self::Dwarf => "the binary's DWARF",
            Self::Table => "the per-release table",
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

fn program<'e>(ebpf: &'e mut Ebpf, name: &'static str) -> Result<&'e mut UProbe, GoRuntimeError> {
    Ok(ebpf.program_mut(name).ok_or(GoRuntimeError::MissingProgram(name))?.try_into()?)
}

impl crate::sources::Source for GoRuntimeSource {
    fn kinds(&self) -> &'static [EventKind] {
        &[
            EventKind::ProcessExec,
            EventKind::ProcessExit,
            EventKind::GoGc,
            EventKind::GoAssist,
            EventKind::GoHeapGrow,
            EventKind::GoScavenge,
        ]
    }

    fn decode(
        &mut self,
        kind: EventKind,
        bytes: &[u8],
        cx: &mut crate::sources::Context<'_>,
        out: &mut Vec<crate::event::Record>,
    ) {
        if matches!(kind, EventKind::ProcessExec | EventKind::ProcessExit) {
            // Not an event of its own: tells this source what started and ended.
            if let Some(raw) = read::<ProcessEvent>(bytes) {
                self.process_event(kind, &raw);
            }
            return;
        }
        let Some(header) = read::<GoHeader>(bytes) else { return };
        if kind == EventKind::GoScavenge
            && read::<GoHeapEvent>(bytes).is_some_and(|raw| raw.amount < SCAVENGE_EVENT_MIN_BYTES)
        {
            self.scavenge_unsummarized += 1;
        }
        let clock = cx.clock;
        if let Some(event) = self.decode_event(kind, bytes, &|ns| clock.wall(ns), cx.cgroups) {
            out.push(cx.record(header.header.ts_ns, event));
        }
    }

    fn poll(&mut self, ebpf: &mut Ebpf) {
        if self.due() {
            self.attach_changes(ebpf);
        }
    }

    fn tick(&mut self, cx: &mut crate::sources::Context<'_>, _last: bool, out: &mut Vec<Record>) {
        for a in std::mem::take(&mut self.attached) {
            let Some(owner) = self.userspace_owner(a.pid, cx) else { continue };
            let attach = GoAttach {
                executable: a.executable,
                layout: a.layout,
                probes: a.probes,
                alloc_sampling: a.alloc_sampling.as_str(),
                mappings: a.mappings,
                watched_from: a.watched_from,
                cycles_at_attach: a.cycles_at_attach,
                env: a.env,
                owner,
            };
            out.push(cx.record(a.ts_ns, Event::GoAttach(attach)));
        }
        self.scavenge_summaries(cx, out);
    }

    fn stopped(&self) -> String {
        match self.scavenge_unsummarized {
            0 => String::new(),
            n => format!(" go_scavenge_unsummarized={n}"),
        }
    }

    fn metrics(&self) -> Vec<SourceMetric> {
        let m = |name, help, counter, value: usize| SourceMetric { name, help, counter, value: value as u64 };
        vec![
            m("go_processes_watched", "Go processes with probes live", false, self.watched.len()),
            m("go_binaries_probed", "Go binaries with probes attached", false, self.probed.len()),
            m(
                "go_binaries_warned",
                "Go binaries some figure cannot be read from (see the warning)",
                false,
                self.warned.len(),
            ),
            m("go_probe_attach_errors", "Go probes that failed to attach", true, self.attach_errors as usize),
            m(
                "go_watched_from_exec",
                "Go processes the kernel watched from their exec (a binary already probed)",
                true,
                self.watched_from_exec as usize,
            ),
            m(
                "go_exec_entry_mismatches",
                "Go processes whose entry written at exec differed from the agent's (replaced)",
                true,
                self.exec_mismatches as usize,
            ),
        ]
    }

    fn ready(&self) -> String {
        format!(
            "go: {} processes watched (selected: {}; found by {})",
            self.watched(),
            self.selection,
            self.discovery()
        )
    }
}

impl GoRuntimeSource {
    /// One `go.scavenge.summary` per process whose counts rose since the
    /// last tick, stamped at its last call. A process that has ended gets
    /// its last summary and its entry removed (nothing adds to it any more:
    /// its `GO_PROCS` entry went first).
    fn scavenge_summaries(&mut self, cx: &mut crate::sources::Context<'_>, out: &mut Vec<Record>) {
        let mut ended = Vec::new();
        let mut rose = Vec::new();
        for item in self.scavenge_counts.iter() {
            let Ok((pid, per_cpu)) = item else { continue };
            let (calls, bytes, last_ns) = per_cpu.iter().fold((0u64, 0u64, 0u64), |(c, b, t), v| {
                (c.wrapping_add(v.calls), b.wrapping_add(v.bytes), t.max(v.last_ns))
            });
            let (seen_calls, seen_bytes) = self.scavenge_seen.get(&pid).copied().unwrap_or_default();
            if calls != seen_calls {
                rose.push((pid, last_ns, calls, bytes, calls.wrapping_sub(seen_calls), bytes.wrapping_sub(seen_bytes)));
            }
            if !self.watched.contains_key(&pid) {
                ended.push(pid);
            }
        }
        for (pid, last_ns, total_calls, total_bytes, calls, bytes) in rose {
            self.scavenge_seen.insert(pid, (total_calls, total_bytes));
            let Some(owner) = self.userspace_owner(pid, cx) else { continue };
            let summary = GoScavengeSummary { calls, bytes, total_calls, total_bytes, owner };
            out.push(cx.record(last_ns, Event::GoScavengeSummary(summary)));
        }
        for pid in ended {
            let _ = self.scavenge_counts.remove(&pid);
            self.scavenge_seen.remove(&pid);
        }
    }

    /// Who a record made in userspace belongs to, from what was read at
    /// attach; `None` for a process no longer known.
    fn userspace_owner(&self, pid: u32, cx: &mut crate::sources::Context<'_>) -> Option<GoOwner> {
        let info = self.info(pid)?;
        let who = cx.cgroups.attribute(info.cgroup_id, CgroupSource::Process);
        Some(GoOwner {
            go_version: Some(info.go_version.clone()),
            go_module: info.main_module.clone(),
            who: Attribution { pid: Some(pid), comm: Some(info.comm.clone()), ..who },
        })
    }
}

/// Wall-clock time of a CLOCK_MONOTONIC instant: (RFC 3339, unix ns).
pub type Wall<'c> = &'c dyn Fn(u64) -> (String, u64);

impl GoRuntimeSource {
    /// The event of a ring buffer record of one of the Go programs.
    pub fn decode_event(
        &mut self,
        kind: EventKind,
        bytes: &[u8],
        wall: Wall<'_>,
        cgroups: &mut CgroupPaths,
    ) -> Option<Event> {
        let header: GoHeader = read(bytes)?;
        let first_gc = kind == EventKind::GoGc && self.gc_seen.insert(header.pid);
        let info = self.info(header.pid);
        let attribution = cgroups.attribute((header.cgroup_id != 0).then_some(header.cgroup_id), CgroupSource::Process);
        let owner = |raw_comm: &[u8]| GoOwner {
            go_version: info.map(|i| i.go_version.clone()),
            go_module: info.and_then(|i| i.main_module.clone()),
            who: Attribution { pid: Some(header.pid), comm: Some(comm(raw_comm)), ..attribution.clone() },
        };
        Some(match kind {
            EventKind::GoGc => {
                let raw: GoGcEvent = read(bytes)?;
                let mut gc = gc_event(&raw, wall, owner(&raw.comm));
                // Cycles are numbered from 1 in each process.
                gc.cycles_unseen = gc.cycle.filter(|_| first_gc).map(|c| c.saturating_sub(1));
                Event::GoGc(gc)
            }
            EventKind::GoAssist => {
                let raw: GoAssistEvent = read(bytes)?;
                Event::GoAssist(GoAssist {
                    duration_ns: (raw.flags & GO_ASSIST_DURATION_KNOWN != 0).then_some(raw.duration_ns),
                    goroutine: format!("{:#x}", raw.goroutine),
                    tid: raw.tid,
                    owner: owner(&raw.comm),
                })
            }
            EventKind::GoHeapGrow | EventKind::GoScavenge => {
                let raw: GoHeapEvent = read(bytes)?;
                let change = GoHeapChange { bytes: raw.amount, tid: raw.tid, owner: owner(&raw.comm) };
                if kind == EventKind::GoHeapGrow { Event::GoHeapGrow(change) } else { Event::GoScavenge(change) }
            }
            _ => return None,
        })
    }
}

/// The start of every Go event record.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoHeader {
    header: observer_common::EventHeader,
    cgroup_id: u64,
    pid: u32,
    tid: u32,
}

// SAFETY: plain old data: integers only, no padding.
unsafe impl aya::Pod for GoHeader {}

/// A GC cycle's figures as read; `None` for those not read.
fn gc_event(raw: &GoGcEvent, wall: Wall<'_>, owner: GoOwner) -> GoGc {
    // The program reads 8 bytes for every figure: keep the low half of the
    // 4-byte ones (x86-64 is little-endian).
    let width = |i: usize| if field::is_u32(i) { u64::from(u32::MAX) } else { u64::MAX };
    let value = |i: usize| (raw.known & (1 << i) != 0).then(|| raw.values[i] & width(i));
    // Go's nanotime() is CLOCK_MONOTONIC (int64), like the kernel's stamps.
    let time = |i: usize| value(i).filter(|&t| t as i64 > 0);
    let between = |a: usize, b: usize| time(b).zip(time(a)).and_then(|(b, a)| b.checked_sub(a));
    let start = time(field::T_SWEEP_TERM).map(wall);
    let end = time(field::T_END).map(wall);
    GoGc {
        cycle: value(field::CYCLES).map(|c| c as u32),
        start_unix_nano: start.as_ref().map(|(_, ns)| *ns),
        start_time: start.map(|(t, _)| t),
        end_unix_nano: end.as_ref().map(|(_, ns)| *ns),
        end_time: end.map(|(t, _)| t),
        sweep_termination_ns: between(field::T_SWEEP_TERM, field::T_MARK),
        mark_ns: between(field::T_MARK, field::T_MARK_TERM),
        mark_termination_ns: between(field::T_MARK_TERM, field::T_END),
        heap_start_bytes: value(field::HEAP0),
        heap_end_bytes: value(field::HEAP1),
        heap_marked_bytes: value(field::HEAP2),
        heap_goal_bytes: value(field::HEAP_GOAL),
        gogc: value(field::GC_PERCENT).map(|v| v as u32 as i32),
        memory_limit_bytes: value(field::MEMORY_LIMIT).map(|v| v as i64),
        cycles_unseen: None,
        owner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(known: &[usize], values: &[(usize, u64)]) -> GoGcEvent {
        let mut v = [0; field::SLOTS];
        for &(i, x) in values {
            v[i] = x;
        }
        GoGcEvent {
            header: observer_common::EventHeader { kind: EventKind::GoGc as u32, cpu: 0, ts_ns: 0 },
            cgroup_id: 0,
            pid: 1,
            tid: 1,
            known: known.iter().map(|&i| 1 << i).sum(),
            _pad: 0,
            values: v,
            comm: [0; 16],
        }
    }

    #[test]
    fn figures_read_are_reported_and_the_others_are_null() {
        let wall: Wall<'_> = &|ns| (format!("t{ns}"), ns + 1000);
        let all: Vec<usize> = (0..field::COUNT).collect();
        let values = [
            (field::CYCLES, 7),
            (field::T_SWEEP_TERM, 100),
            (field::T_MARK, 150),
            (field::T_MARK_TERM, 400),
            (field::T_END, 420),
            (field::HEAP0, 4 << 20),
            (field::HEAP1, 5 << 20),
            (field::HEAP2, 1 << 20),
            (field::HEAP_GOAL, 8 << 20),
            (field::GC_PERCENT, u64::from(u32::MAX)), // -1: off
            (field::MEMORY_LIMIT, i64::MAX as u64),
        ];
        let owner = GoOwner { go_version: None, go_module: None, who: Attribution::default() };
        let gc = gc_event(&raw(&all, &values), wall, owner.clone());
        assert_eq!(gc.cycle, Some(7));
        assert_eq!((gc.start_time.as_deref(), gc.start_unix_nano), (Some("t100"), Some(1100)));
        assert_eq!(gc.end_unix_nano, Some(1420));
        assert_eq!((gc.sweep_termination_ns, gc.mark_ns, gc.mark_termination_ns), (Some(50), Some(250), Some(20)));
        assert_eq!(
            (gc.heap_start_bytes, gc.heap_end_bytes, gc.heap_marked_bytes),
            (Some(4 << 20), Some(5 << 20), Some(1 << 20))
        );
        assert_eq!(gc.heap_goal_bytes, Some(8 << 20));
        assert_eq!(gc.gogc, Some(-1));
        assert_eq!(gc.memory_limit_bytes, Some(i64::MAX));

        let some = gc_event(&raw(&[field::CYCLES, field::T_MARK], &values), wall, owner);
        assert_eq!(some.cycle, Some(7));
        assert_eq!((some.start_time, some.sweep_termination_ns, some.mark_ns), (None, None, None));
        assert_eq!((some.heap_start_bytes, some.gogc, some.memory_limit_bytes), (None, None, None));
    }
}
