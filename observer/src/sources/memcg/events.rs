//! `memory.events` of every cgroup with the memory controller, watched on a
//! thread of its own: inotify `IN_MODIFY` (the kernel's `cgroup_file_notify`
//! fires on each counter change but coalesces bursts, so every notification
//! re-reads the file and reports the rise), or polling as the fallback.
//! New cgroups are found by rescanning the tree every second.
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

use super::Mechanism;
use crate::event::{Attribution, CgroupSource, Event, MemcgEvents, MemoryEventCounts, Workload};

/// New cgroups are picked up within this long.
const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// Polling interval of the `poll` mechanism; also how often the inotify
/// loop looks at the stop flag.
const POLL_EVERY: Duration = Duration::from_millis(200);

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
}

impl MemcgWatcher {
    /// Starts watching; falls back to polling when inotify cannot start.
    pub fn start(root: PathBuf, wanted: Mechanism) -> Result<Self, MemcgError> {
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
        let mut watch = Watch { root, inotify, mechanism, tx, cgroups: HashMap::new(), by_wd: HashMap::new() };
        // Cgroups there now count from now; later ones from their creation.
        watch.rescan(true);
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("memcg-events".into())
            .spawn(move || watch.run(&flag))
            .map_err(MemcgError::Thread)?;
        Ok(Self { rx, stop, thread: Some(thread), mechanism })
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
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
}

struct Watch {
    root: PathBuf,
    inotify: Option<Inotify>,
    mechanism: Mechanism,
    tx: UnboundedSender<Change>,
    /// Keyed by the cgroup's directory.
    cgroups: HashMap<PathBuf, Watched>,
    by_wd: HashMap<WatchDescriptor, PathBuf>,
}

impl Watch {
    fn run(mut self, stop: &AtomicBool) {
        let mut last_scan = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match &self.inotify {
                Some(inotify) => {
                    let changed = wait_changes(inotify, POLL_EVERY);
                    let dirs: Vec<PathBuf> = changed.iter().filter_map(|wd| self.by_wd.get(wd).cloned()).collect();
                    for dir in dirs {
                        self.read(&dir);
                    }
                }
                None => {
                    std::thread::sleep(POLL_EVERY);
                    self.read_all();
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
        // Whatever rose since the last notification or tick.
        self.read_all();
    }

    fn read_all(&mut self) {
        let dirs: Vec<PathBuf> = self.cgroups.keys().cloned().collect();
        for dir in dirs {
            self.read(&dir);
        }
    }

    /// Reads one cgroup's `memory.events` and sends the rise, if any.
    fn read(&mut self, dir: &Path) {
        let Some(text) = std::fs::read_to_string(dir.join("memory.events")).ok() else {
            // Removed: its watch went with it.
            self.forget(dir);
            return;
        };
        let total = parse_events(&text);
        let Some(w) = self.cgroups.get_mut(dir) else { return };
        let delta = total.since(&w.last);
        w.last = total;
        if delta == MemoryEventCounts::default() {
            return;
        }
        let limit = |name: &str| read_limit(&dir.join(name));
        let event = Event::MemcgEvents(MemcgEvents {
            mechanism: self.mechanism.name(),
            delta,
            total,
            memory_current: limit("memory.current"),
            memory_high: limit("memory.high"),
            memory_max: limit("memory.max"),
            who: Attribution {
                cgroup_id: Some(w.id),
                workload: Workload::from_cgroup_path(Some(&w.rel)),
                cgroup_path: Some(w.rel.clone()),
                cgroup_source: CgroupSource::Cgroup,
                pid: None,
                comm: None,
            },
        });
        // The receiver is gone only when the agent is stopping.
        let _ = self.tx.send((monotonic_ns(), event));
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
        self.cgroups.insert(dir.clone(), Watched { rel, id: meta.ino(), wd, last });
        if !initial {
            // Events before the watch existed would otherwise wait for the next one.
            self.read(&dir);
        }
    }
}

/// Waits up to `timeout` for notifications; the watches that fired.
fn wait_changes(inotify: &Inotify, timeout: Duration) -> Vec<WatchDescriptor> {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) if n > 0 => {}
        _ => return Vec::new(),
    }
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

/// `memory.events` text → counters (unknown keys ignored, missing ones 0).
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
            "oom_group_kill" => c.oom_group_kill = value,
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
            oom_group_kill: self.oom_group_kill.saturating_sub(before.oom_group_kill),
        }
    }
}

/// A byte count from a cgroup file; `max` (no limit) and errors are `None`.
fn read_limit(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0))
        .unwrap_or(0)
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
        // 6.1 has no oom_group_kill line.
        assert_eq!(parse_events("high 3\n").oom_group_kill, 0);
    }
}
