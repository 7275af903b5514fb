//! `memory.events` of every cgroup with the memory controller, watched on a
//! thread of its own: inotify `IN_MODIFY` (the kernel's `cgroup_file_notify`
//! fires on each counter change but coalesces bursts, so every notification
//! re-reads the file and reports the rise), or polling as the fallback.
//! New cgroups are found by rescanning the tree every second.
//!
//! With the `stat` reclaim mechanism it also reads each cgroup's
//! `memory.stat` reclaim counters (see `super::reclaim_stat`).
//!
//! The same thread watches each cgroup's `memory.pressure` (PSI): a trigger
//! per cgroup whose POLLPRI joins the same poll, or a read on the timer (see
//! `super::pressure`).
//!
//! `memory.events` is hierarchical: a parent counts its descendants' events
//! too. For nested trees, `memory.events.local` holds a cgroup's own counts;
//! we report the hierarchical file (what limits act on) with the cgroup path,
//! so a consumer takes leaves for attribution.

use std::{
    collections::HashMap,
    os::{fd::AsFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor},
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::{Mechanism, Pressure, kernel::limits, pressure, reclaim_stat};
use crate::event::{
    Attribution, CgroupSource, Event, MemcgEvents, MemcgPressure, MemcgReclaimStat, MemoryEventCounts,
    ReclaimStatCounts, Workload,
};
use crate::kernel::clock::monotonic_ns;

/// New cgroups are picked up within this long.
const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// Polling interval of the `poll` mechanism; also how often the inotify
/// loop looks at the stop flag.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// With the `stat` reclaim mechanism, every `memory.stat` is read this often
/// too (reclaim that leaves `memory.events` alone: kswapd, `memory.reclaim`).
const RECLAIM_STAT_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum MemcgError {
    #[error("{0}")]
    Unavailable(String),
    #[error("starting the memory.events thread: {0}")]
    Thread(std::io::Error),
}

/// A change found, stamped with CLOCK_MONOTONIC nanoseconds.
pub type Change = (u64, Event);

/// The running watcher; [`MemcgWatcher::stop`] reads every file once more.
pub struct MemcgWatcher {
    pub rx: UnboundedReceiver<Change>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    mechanism: Mechanism,
    pressure: Option<Pressure>,
}

impl MemcgWatcher {
    /// Starts watching; falls back to polling when inotify cannot start.
    /// `pressure` is `None` when the kernel has no PSI (nothing to read);
    /// `reclaim_stat` turns on the `stat` reclaim mechanism.
    pub fn start(
        root: PathBuf,
        wanted: Mechanism,
        pressure: Option<Pressure>,
        reclaim_stat: bool,
    ) -> Result<Self, MemcgError> {
        let inotify = match wanted {
            Mechanism::Inotify => match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
                Ok(inotify) => Some(inotify),
                Err(e) => {
                    tracing::warn!("inotify unavailable ({e}); polling memory.events instead");
                    None
                }
            },
            Mechanism::Poll => None,
        };
        let mechanism = if inotify.is_some() { Mechanism::Inotify } else { Mechanism::Poll };
        let (tx, rx) = unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut watch = Watch {
            root,
            inotify,
            mechanism,
            pressure,
            reclaim_stat,
            tx,
            cgroups: HashMap::new(),
            by_wd: HashMap::new(),
        };
        // Cgroups there now count from now; later ones from their creation.
        watch.rescan(true);
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("memcg-events".into())
            .spawn(move || watch.run(&flag))
            .map_err(MemcgError::Thread)?;
        Ok(Self { rx, stop, thread: Some(thread), mechanism, pressure })
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    pub fn pressure(&self) -> Option<Pressure> {
        self.pressure
    }

    /// Stops the thread after a last read of every file; what it found is
    /// left in `rx`.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the memory.events thread panicked");
        }
    }
}

struct Watched {
    /// Path below the cgroup2 mount.
    rel: String,
    id: u64,
    wd: Option<WatchDescriptor>,
    last: MemoryEventCounts,
    /// The PSI trigger, when one could be made.
    psi: Option<std::fs::File>,
    psi_last: pressure::Totals,
    /// `memory.stat` reclaim counters last read (`stat` reclaim mechanism).
    stat_last: ReclaimStatCounts,
}

struct Watch {
    root: PathBuf,
    inotify: Option<Inotify>,
    mechanism: Mechanism,
    pressure: Option<Pressure>,
    reclaim_stat: bool,
    tx: UnboundedSender<Change>,
    /// Keyed by the cgroup's directory.
    cgroups: HashMap<PathBuf, Watched>,
    by_wd: HashMap<WatchDescriptor, PathBuf>,
}

impl Watch {
    fn run(mut self, stop: &AtomicBool) {
        let mut last_scan = Instant::now();
        let mut last_poll = Instant::now();
        let mut last_stat = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let (changed, stalled) = self.wait(POLL_EVERY);
            let dirs: Vec<PathBuf> = changed.iter().filter_map(|wd| self.by_wd.get(wd).cloned()).collect();
            for dir in dirs {
                self.read(&dir);
            }
            for dir in stalled {
                self.read_pressure(&dir);
            }
            if last_poll.elapsed() >= POLL_EVERY {
                last_poll = Instant::now();
                if self.inotify.is_none() {
                    self.read_all();
                }
                // Cgroups without a trigger (or all, with `poll`).
                let polled: Vec<PathBuf> =
                    self.cgroups.iter().filter(|(_, w)| w.psi.is_none()).map(|(d, _)| d.clone()).collect();
                for dir in polled {
                    self.read_pressure(&dir);
                }
            }
            if self.reclaim_stat && last_stat.elapsed() >= RECLAIM_STAT_EVERY {
                last_stat = Instant::now();
                let dirs: Vec<PathBuf> = self.cgroups.keys().cloned().collect();
                for dir in dirs {
                    self.read_stat(&dir);
                }
            }
            if last_scan.elapsed() >= RESCAN_EVERY {
                last_scan = Instant::now();
                self.rescan(false);
                if self.inotify.is_some() {
                    // Cgroups whose watch could not be added are polled.
                    let unwatched: Vec<PathBuf> =
                        self.cgroups.iter().filter(|(_, w)| w.wd.is_none()).map(|(d, _)| d.clone()).collect();
                    for dir in unwatched {
                        self.read(&dir);
                    }
                }
            }
        }
        // Whatever rose since the last notification or tick, in cgroups made
        // since the last rescan too (a short-lived container's OOM kill can
        // come and go within a second of the stop).
        self.rescan(false);
        self.read_all();
        let dirs: Vec<PathBuf> = self.cgroups.keys().cloned().collect();
        for dir in dirs {
            self.read_pressure_at(&dir, true);
            self.read_stat(&dir);
        }
    }

    fn read_all(&mut self) {
        let dirs: Vec<PathBuf> = self.cgroups.keys().cloned().collect();
        for dir in dirs {
            self.read(&dir);
        }
    }

    /// Waits up to `timeout` for inotify or a PSI trigger: the watches that
    /// fired, and the cgroups whose trigger fired.
    fn wait(&mut self, timeout: Duration) -> (Vec<WatchDescriptor>, Vec<PathBuf>) {
        let triggers: Vec<(&PathBuf, &std::fs::File)> =
            self.cgroups.iter().filter_map(|(d, w)| w.psi.as_ref().map(|f| (d, f))).collect();
        if self.inotify.is_none() && triggers.is_empty() {
            std::thread::sleep(timeout);
            return (Vec::new(), Vec::new());
        }
        let mut fds: Vec<PollFd> = triggers.iter().map(|(_, f)| PollFd::new(f.as_fd(), PollFlags::POLLPRI)).collect();
        if let Some(inotify) = &self.inotify {
            fds.push(PollFd::new(inotify.as_fd(), PollFlags::POLLIN));
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => {}
            _ => return (Vec::new(), Vec::new()),
        }
        let mut stalled = Vec::new();
        let mut broken = Vec::new();
        for ((dir, _), fd) in triggers.iter().zip(&fds) {
            let revents = fd.revents().unwrap_or(PollFlags::empty());
            if revents.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
                // The cgroup went away (or PSI was turned off): read, then poll.
                broken.push((*dir).clone());
            } else if revents.contains(PollFlags::POLLPRI) {
                stalled.push((*dir).clone());
            }
        }
        let inotify_ready = self.inotify.is_some()
            && fds.last().and_then(|f| f.revents()).is_some_and(|r| r.contains(PollFlags::POLLIN));
        drop(fds);
        for dir in &broken {
            if let Some(w) = self.cgroups.get_mut(dir) {
                w.psi = None;
            }
        }
        stalled.extend(broken);
        let changed = match (&self.inotify, inotify_ready) {
            (Some(inotify), true) => read_changes(inotify),
            _ => Vec::new(),
        };
        (changed, stalled)
    }

    /// Reads one cgroup's `memory.pressure` and sends the rise, if any.
    fn read_pressure(&mut self, dir: &Path) {
        self.read_pressure_at(dir, false);
    }

    /// `at_stop`: the last read as the agent stops, whatever fired.
    fn read_pressure_at(&mut self, dir: &Path, at_stop: bool) {
        if self.pressure.is_none() {
            return;
        }
        let Some(totals) = pressure::read(dir) else { return };
        let Some(w) = self.cgroups.get_mut(dir) else { return };
        let last = w.psi_last;
        if totals.some_total_us <= last.some_total_us && totals.full_total_us <= last.full_total_us {
            return;
        }
        w.psi_last = totals;
        let event = Event::MemcgPressure(MemcgPressure {
            mechanism: if w.psi.is_some() { Pressure::Trigger.name() } else { Pressure::Poll.name() },
            some_total_us: totals.some_total_us,
            full_total_us: totals.full_total_us,
            some_delta_us: totals.some_total_us.saturating_sub(last.some_total_us),
            full_delta_us: totals.full_total_us.saturating_sub(last.full_total_us),
            some_avg10: totals.some_avg10,
            full_avg10: totals.full_avg10,
            at_stop,
            limits: limits(dir),
            who: w.who(),
        });
        let _ = self.tx.send((monotonic_ns(), event));
    }

    /// Reads one cgroup's `memory.stat` reclaim counters and sends the rise,
    /// if any (`stat` reclaim mechanism only).
    fn read_stat(&mut self, dir: &Path) {
        if !self.reclaim_stat {
            return;
        }
        let Some(total) = reclaim_stat::read(dir) else { return };
        let Some(w) = self.cgroups.get_mut(dir) else { return };
        let Some(delta) = rise(&mut w.stat_last, total, ReclaimStatCounts::since) else { return };
        let event = Event::MemcgReclaimStat(MemcgReclaimStat {
            mechanism: "memory.stat",
            delta,
            total,
            limits: limits(dir),
            who: w.who(),
        });
        let _ = self.tx.send((monotonic_ns(), event));
    }

    /// Reads one cgroup's `memory.events` and sends the rise, if any; a
    /// change also reads its `memory.stat` (reclaim goes with `high`/`max`).
    fn read(&mut self, dir: &Path) {
        let Some(text) = std::fs::read_to_string(dir.join("memory.events")).ok() else {
            // Removed: its watch went with it.
            self.forget(dir);
            return;
        };
        let total = parse_events(&text);
        let Some(w) = self.cgroups.get_mut(dir) else { return };
        let Some(delta) = rise(&mut w.last, total, MemoryEventCounts::since) else { return };
        let event = Event::MemcgEvents(MemcgEvents {
            mechanism: self.mechanism.name(),
            delta,
            total,
            limits: limits(dir),
            who: w.who(),
        });
        // The receiver is gone only when the agent is stopping.
        let _ = self.tx.send((monotonic_ns(), event));
        self.read_stat(dir);
    }

    fn forget(&mut self, dir: &Path) {
        if let Some(w) = self.cgroups.remove(dir)
            && let Some(wd) = w.wd
        {
            self.by_wd.remove(&wd);
            if let Some(inotify) = &self.inotify {
                // Fails with EINVAL when the kernel already dropped it.
                let _ = inotify.rm_watch(wd);
            }
        }
    }

    /// Adds cgroups that appeared, drops those that went.
    fn rescan(&mut self, initial: bool) {
        // The root has no memory.events; a child has one only when its parent
        // enables the memory controller for it.
        let seen: Vec<PathBuf> = crate::cgroup::directories(&self.root)
            .into_iter()
            .filter(|dir| dir.join("memory.events").is_file())
            .collect();
        let present: std::collections::HashSet<&PathBuf> = seen.iter().collect();
        let gone: Vec<PathBuf> = self.cgroups.keys().filter(|d| !present.contains(d)).cloned().collect();
        for dir in gone {
            self.forget(&dir);
        }
        for dir in seen {
            if !self.cgroups.contains_key(&dir) {
                self.add(dir, initial);
            }
        }
    }

    fn add(&mut self, dir: PathBuf, initial: bool) {
        let Ok(meta) = std::fs::metadata(&dir) else { return };
        let wd = match &self.inotify {
            Some(inotify) => match inotify.add_watch(&dir.join("memory.events"), AddWatchFlags::IN_MODIFY) {
                Ok(wd) => Some(wd),
                Err(e) => {
                    // Out of watches (fs.inotify.max_user_watches): poll this one.
                    tracing::warn!("inotify on {}/memory.events: {e}; polling it every second", dir.display());
                    None
                }
            },
            None => None,
        };
        let rel = dir.strip_prefix(&self.root).map(|p| format!("/{}", p.display())).unwrap_or_default();
        // Watched from the start: the counts so far are history. Found later:
        // the cgroup is new, so everything it counted happened while we ran.
        let last = if initial {
            std::fs::read_to_string(dir.join("memory.events")).map(|t| parse_events(&t)).unwrap_or_default()
        } else {
            MemoryEventCounts::default()
        };
        if let Some(wd) = wd {
            self.by_wd.insert(wd, dir.clone());
        }
        let psi = match self.pressure {
            Some(Pressure::Trigger) => match pressure::trigger(&dir) {
                Ok(file) => Some(file),
                Err(e) => {
                    tracing::warn!("PSI trigger on {}/memory.pressure: {e}; polling it", dir.display());
                    None
                }
            },
            _ => None,
        };
        // Like memory.events: history for cgroups there at the start.
        let psi_last = if initial { pressure::read(&dir).unwrap_or_default() } else { pressure::Totals::default() };
        let stat_last = if initial && self.reclaim_stat {
            reclaim_stat::read(&dir).unwrap_or_default()
        } else {
            ReclaimStatCounts::default()
        };
        self.cgroups.insert(dir.clone(), Watched { rel, id: meta.ino(), wd, last, psi, psi_last, stat_last });
        if !initial {
            // Events before the watch existed would otherwise wait for the next one.
            self.read(&dir);
            self.read_pressure(&dir);
            self.read_stat(&dir);
        }
    }
}

impl Watched {
    fn who(&self) -> Attribution {
        Attribution {
            cgroup_id: Some(self.id),
            workload: Workload::from_cgroup_path(Some(&self.rel)),
            cgroup_path: Some(self.rel.clone()),
            cgroup_source: CgroupSource::Cgroup,
            pid: None,
            comm: None,
        }
    }
}

/// Counters read as `total`: the rise from `last` (then `total`), or `None`
/// when nothing rose.
fn rise<T: Copy + Default + PartialEq>(last: &mut T, total: T, since: fn(&T, &T) -> T) -> Option<T> {
    let delta = since(&total, last);
    *last = total;
    (delta != T::default()).then_some(delta)
}

/// The watches with pending notifications.
fn read_changes(inotify: &Inotify) -> Vec<WatchDescriptor> {
    let mut wds = Vec::new();
    // Non-blocking: read until the queue is empty.
    while let Ok(events) = inotify.read_events() {
        if events.is_empty() {
            break;
        }
        for e in events {
            if !wds.contains(&e.wd) {
                wds.push(e.wd);
            }
        }
    }
    wds
}

/// `memory.events` text → counters (unknown keys ignored, missing ones 0,
/// but `oom_group_kill`, which older kernels lack, `None`).
pub fn parse_events(text: &str) -> MemoryEventCounts {
    let mut c = MemoryEventCounts::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next().and_then(|v| v.parse::<u64>().ok())) else {
            continue;
        };
        match key {
            "low" => c.low = value,
            "high" => c.high = value,
            "max" => c.max = value,
            "oom" => c.oom = value,
            "oom_kill" => c.oom_kill = value,
            "oom_group_kill" => c.oom_group_kill = Some(value),
            _ => {}
        }
    }
    c
}

impl MemoryEventCounts {
    /// The rise from `before`; a counter never falls, so a fall reads as 0.
    fn since(&self, before: &Self) -> Self {
        Self {
            low: self.low.saturating_sub(before.low),
            high: self.high.saturating_sub(before.high),
            max: self.max.saturating_sub(before.max),
            oom: self.oom.saturating_sub(before.oom),
            oom_kill: self.oom_kill.saturating_sub(before.oom_kill),
            oom_group_kill: self.oom_group_kill.map(|now| now.saturating_sub(before.oom_group_kill.unwrap_or(0))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_memory_events_and_deltas() {
        let before = parse_events("low 0\nhigh 5\nmax 1\noom 0\noom_kill 0\noom_group_kill 0\n");
        let after = parse_events("low 0\nhigh 12\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\nsock_throttled 0\n");
        let d = after.since(&before);
        assert_eq!((d.high, d.max, d.oom, d.oom_kill, d.low), (7, 2, 2, 2, 0));
        assert_eq!(d.oom_group_kill, Some(0));
        // 5.10 has no oom_group_kill line: unknown, not 0.
        let old = parse_events("high 3\n");
        assert_eq!(old.oom_group_kill, None);
        assert_eq!(parse_events("high 4\n").since(&old).oom_group_kill, None);
    }
}
