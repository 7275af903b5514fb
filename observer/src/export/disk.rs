//! One size budget for every file the agent writes in its output directory.
//!
//! Each file (`events.jsonl`, `traces.jsonl`) is written as segments: past
//! a segment's size the current file is renamed `<name>.<seq>` and a new
//! one started; while the directory's files (current and rotated, of every
//! writer) add up to more than the budget, the oldest rotated segment is
//! removed, whatever file it came from. Removals are counted. Whole files
//! (profiles, under `profiles/`) count the same way: each is removable as
//! soon as it is written, oldest first.
//!
//! A write that fails (disk full, read-only) stops the writing: the agent
//! runs on, counts what it did not write, says why on its status line, and
//! tries again every `RETRY_AFTER`.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The default of `--disk-budget`.
pub const DEFAULT_BUDGET: u64 = 256 << 20;
/// A budget below this leaves no room for one episode line.
pub const MIN_BUDGET: u64 = 64 << 10;
/// Where whole files (profiles) go, inside the directory.
pub const WHOLE_FILES_DIR: &str = "profiles";
/// After a failed write, the next try.
const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Files rotate at this share of the budget: with two writers the current
/// files fill at most half of it, and a removal frees a slice, not all.
const SEGMENTS_PER_BUDGET: u64 = 8;

/// The budget and what is on disk, shared by every writer of a directory.
#[derive(Debug)]
pub struct Disk {
    dir: PathBuf,
    budget: u64,
    segment: u64,
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// Rotated segments by sequence (oldest first): path and size.
    rotated: BTreeMap<u64, (PathBuf, u64)>,
    /// Bytes of each current file, by name.
    current: BTreeMap<String, u64>,
    next_seq: u64,
    removed: u64,
    removed_bytes: u64,
    /// Why writing stopped, and when to try again.
    stopped: Option<(String, Instant)>,
}

impl Ledger {
    fn total(&self) -> u64 {
        self.rotated.values().map(|(_, n)| n).sum::<u64>() + self.current.values().sum::<u64>()
    }
}

/// What the status line and the stop line show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStatus {
    pub used: u64,
    pub budget: u64,
    pub removed: u64,
    pub removed_bytes: u64,
    pub stopped: Option<String>,
}

impl DiskStatus {
    /// ` disk=12.0MiB/256.0MiB removed=3` and, while writing is stopped, why.
    pub fn text(&self) -> String {
        let mut s = format!(" disk={}/{} removed={}", mib(self.used), mib(self.budget), self.removed);
        if let Some(why) = &self.stopped {
            s.push_str(&format!(" disk_writes_stopped=\"{why}\""));
        }
        s
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / f64::from(1 << 20))
}

impl Disk {
    /// Creates `dir` (the output directory) and takes stock of it.
    pub fn create(dir: &Path, budget: u64) -> Result<Arc<Disk>, super::jsonl::OutputError> {
        std::fs::create_dir_all(dir)
            .map_err(|error| super::jsonl::OutputError::Dir { dir: dir.to_path_buf(), error })?;
        Ok(Self::new(dir, budget))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes stock of `dir`: segments an earlier run rotated count against
    /// the budget (and go first), so a restart does not reset it.
    pub fn new(dir: &Path, budget: u64) -> Arc<Disk> {
        let mut ledger = Ledger::default();
        for (_, seq, path) in rotated_in(dir) {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            ledger.rotated.insert(seq, (path, size));
            ledger.next_seq = ledger.next_seq.max(seq + 1);
        }
        // An earlier run's whole files, oldest first, after its segments.
        let mut whole = whole_files_in(&dir.join(WHOLE_FILES_DIR));
        whole.sort();
        for (_, path, size) in whole {
            let seq = ledger.next_seq;
            ledger.rotated.insert(seq, (path, size));
            ledger.next_seq += 1;
        }
        let segment = (budget / SEGMENTS_PER_BUDGET).max(1);
        Arc::new(Disk { dir: dir.to_path_buf(), budget, segment, ledger: Mutex::new(ledger) })
    }

    pub fn status(&self) -> DiskStatus {
        let l = self.lock();
        DiskStatus {
            used: l.total(),
            budget: self.budget,
            removed: l.removed,
            removed_bytes: l.removed_bytes,
            stopped: l.stopped.as_ref().map(|(why, _)| why.clone()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A writer that panicked mid-update leaves sizes that are at worst
        // stale: keep going with them.
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `<dir>/<name>` whole (a temporary file renamed: a reader never
    /// sees half of it), under the budget; `name` may hold a subdirectory.
    pub fn write_whole(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, WriteError> {
        let path = self.dir.join(name);
        let mut l = self.lock();
        if let Some((why, since)) = &l.stopped {
            if since.elapsed() < RETRY_AFTER {
                return Err(WriteError::Stopped { path, why: why.clone() });
            }
            l.stopped = None;
        }
        let partial = path.with_extension("partial");
        let written = (|| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&partial, bytes)?;
            std::fs::rename(&partial, &path)
        })();
        if let Err(error) = written {
            let _ = std::fs::remove_file(&partial);
            l.stopped = Some((error.to_string(), Instant::now()));
            return Err(WriteError::Io { path, error });
        }
        let seq = l.next_seq;
        l.next_seq += 1;
        l.rotated.insert(seq, (path.clone(), bytes.len() as u64));
        self.enforce(&mut l);
        Ok(path)
    }

    /// Removes the oldest rotated segments until the files fit the budget.
    fn enforce(&self, l: &mut Ledger) {
        while l.total() > self.budget {
            let Some((_, (path, size))) = l.rotated.pop_first() else { break };
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    l.removed += 1;
                    l.removed_bytes += size;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }
}

/// The rotated segments in `dir`: (file they came from, sequence, path).
fn rotated_in(dir: &Path) -> Vec<(String, u64, PathBuf)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file_name = e.file_name().to_string_lossy().into_owned();
            let (base, seq) = rotated_name(&file_name)?;
            Some((base.to_string(), seq, e.path()))
        })
        .collect()
}

/// Files under `dir` and its subdirectories: (modified, path, size).
fn whole_files_in(dir: &Path) -> Vec<(std::time::SystemTime, PathBuf, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            out.extend(whole_files_in(&entry.path()));
        } else if let Ok(modified) = meta.modified() {
            out.push((modified, entry.path(), meta.len()));
        }
    }
    out
}

/// `events.jsonl.12` → (`events.jsonl`, 12).
fn rotated_name(name: &str) -> Option<(&str, u64)> {
    let (base, seq) = name.rsplit_once('.')?;
    let known = base == crate::export::jsonl::FILE_NAME || base == crate::export::otlp::file::FILE_NAME;
    if !known || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, seq.parse().ok()?))
}

/// One file of the directory, appended to under the shared budget.
#[derive(Debug)]
pub struct BudgetedFile {
    disk: Arc<Disk>,
    name: String,
    path: PathBuf,
    file: Option<File>,
}

/// Why a line was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing to {path} stopped: {why}")]
    Stopped { path: PathBuf, why: String },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
}

impl BudgetedFile {
    /// Opens `<dir>/<name>` for appending (an error here is the caller's to
    /// report: it happens before anything is attached).
    pub fn open(disk: &Arc<Disk>, name: &str) -> std::io::Result<BudgetedFile> {
        let path = disk.dir.join(name);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let mut l = disk.lock();
        l.current.insert(name.to_string(), size);
        disk.enforce(&mut l);
        drop(l);
        Ok(BudgetedFile { disk: disk.clone(), name: name.to_string(), path, file: Some(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes` (whole lines) with one `write_all`: with `O_APPEND`
    /// a reader never sees half of one line followed by another.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let disk = self.disk.clone();
        let mut l = disk.lock();
        if let Some((why, since)) = &l.stopped {
            if since.elapsed() < RETRY_AFTER {
                return Err(WriteError::Stopped { path: self.path.clone(), why: why.clone() });
            }
            l.stopped = None;
            self.file = None;
        }
        let len = bytes.len() as u64;
        let result = (|| {
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(OpenOptions::new().create(true).append(true).open(&self.path)?),
            };
            file.write_all(bytes)
        })();
        match result {
            Ok(()) => {
                let size = l.current.entry(self.name.clone()).or_default();
                *size += len;
                // Rotated once full, so that even a line longer than a
                // segment ends up in a file the budget can remove.
                if *size >= disk.segment
                    && let Err(e) = self.rotate(&mut l)
                {
                    tracing::warn!("cannot rotate {}: {e}", self.path.display());
                }
                disk.enforce(&mut l);
                Ok(())
            }
            Err(error) => {
                // Part of the chunk may be on disk: cut it off, so that the
                // file holds whole lines only (a later write appends after).
                let size = l.current.get(&self.name).copied().unwrap_or(0);
                if let Some(f) = &self.file
                    && f.metadata().is_ok_and(|m| m.len() > size)
                    && f.set_len(size).is_err()
                {
                    self.file = None;
                }
                let why = error.to_string();
                if l.stopped.is_none() {
                    tracing::warn!(
                        "writing {} failed ({why}); the agent runs on without writing its files and tries again every {}s",
                        self.path.display(),
                        RETRY_AFTER.as_secs()
                    );
                }
                l.stopped = Some((why, Instant::now()));
                Err(WriteError::Io { path: self.path.clone(), error })
            }
        }
    }

    /// The current file becomes `<name>.<seq>`; the next write starts a new one.
    fn rotate(&mut self, l: &mut Ledger) -> std::io::Result<()> {
        let seq = l.next_seq;
        let to = self.disk.dir.join(format!("{}.{seq}", self.name));
        std::fs::rename(&self.path, &to)?;
        self.file = None;
        l.next_seq += 1;
        let size = l.current.insert(self.name.clone(), 0).unwrap_or(0);
        l.rotated.insert(seq, (to, size));
        Ok(())
    }
}

/// The files of `name` in `dir`, oldest first: rotated segments by sequence,
/// then the current file (for readers such as `observer episodes`).
pub fn segments(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut rotated: Vec<(u64, PathBuf)> =
        rotated_in(dir).into_iter().filter(|(base, _, _)| base == name).map(|(_, seq, path)| (seq, path)).collect();
    rotated.sort();
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    let current = dir.join(name);
    if current.exists() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of_dir(dir: &Path) -> u64 {
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum()
    }

    #[test]
    fn files_rotate_and_the_oldest_segments_go_first_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path(), 8000);
        let mut events = BudgetedFile::open(&disk, "events.jsonl").unwrap();
        let mut traces = BudgetedFile::open(&disk, "traces.jsonl").unwrap();
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        for i in 0..300 {
            events.append(&line).unwrap();
            if i % 3 == 0 {
                traces.append(&line).unwrap();
            }
        }
        let status = disk.status();
        assert!(status.used <= 8000, "{status:?}");
        assert_eq!(status.used, size_of_dir(dir.path()), "the ledger is what is on disk");
        // 400 lines of 100 bytes written, at most 8000 kept: the rest removed.
        assert_eq!(status.removed_bytes + status.used, 400 * 100, "{status:?}");
        assert!(status.removed > 0);
        // Every file holds whole lines, and the newest lines are kept.
        let events_files = segments(dir.path(), "events.jsonl");
        assert!(events_files.len() >= 2, "{events_files:?}");
        for f in &events_files {
            let text = std::fs::read(f).unwrap();
            assert_eq!(text.len() % 100, 0);
        }
        // 300 lines of events: the kept ones are the last, in order.
        let kept: usize = events_files.iter().map(|f| std::fs::read(f).unwrap().len() / 100).sum();
        assert!(kept > 0 && kept < 300, "{kept}");
    }

    #[test]
    fn a_line_longer_than_the_budget_is_written_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path(), 8000);
        let mut traces = BudgetedFile::open(&disk, "traces.jsonl").unwrap();
        traces.append(&[b'\n'; 100]).unwrap();
        traces.append(&[b'\n'; 10_000]).unwrap();
        let status = disk.status();
        assert_eq!((status.used, status.removed_bytes), (0, 10_100), "{status:?}");
        assert_eq!(size_of_dir(dir.path()), 0);
        traces.append(&[b'\n'; 10]).unwrap();
        assert_eq!(disk.status().used, 10);
    }

    #[test]
    fn a_restart_counts_what_an_earlier_run_rotated() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("events.jsonl.3"), vec![b'a'; 5000]).unwrap();
        std::fs::write(dir.path().join("traces.jsonl.4"), vec![b'b'; 2000]).unwrap();
        std::fs::write(dir.path().join("other.7"), vec![b'c'; 9000]).unwrap();
        let disk = Disk::new(dir.path(), 6000);
        let _events = BudgetedFile::open(&disk, "events.jsonl").unwrap();
        let status = disk.status();
        assert_eq!((status.used, status.removed), (2000, 1), "the oldest (seq 3) went: {status:?}");
        assert!(!dir.path().join("events.jsonl.3").exists());
        assert!(dir.path().join("other.7").exists(), "files not ours are left alone");
        let mut traces = BudgetedFile::open(&disk, "traces.jsonl").unwrap();
        traces.append(&[b'\n'; 10]).unwrap();
        // The next rotation numbers after what was found.
        assert_eq!(disk.lock().next_seq, 5);
    }

    #[test]
    fn a_failed_write_stops_writing_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path(), DEFAULT_BUDGET);
        let mut events = BudgetedFile::open(&disk, "events.jsonl").unwrap();
        events.append(b"one\n").unwrap();
        // The directory gone under it: the file is still open, so swap in
        // one that cannot be written (opened read-only).
        events.file = Some(File::open(dir.path().join("events.jsonl")).unwrap());
        assert!(matches!(events.append(b"two\n"), Err(WriteError::Io { .. })));
        assert!(matches!(events.append(b"three\n"), Err(WriteError::Stopped { .. })));
        let status = disk.status();
        assert!(status.stopped.is_some(), "{status:?}");
        assert!(status.text().contains("disk_writes_stopped="), "{}", status.text());
        assert_eq!(std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap(), "one\n");
    }

    #[test]
    fn rotated_names_are_ours_only() {
        assert_eq!(rotated_name("events.jsonl.12"), Some(("events.jsonl", 12)));
        assert_eq!(rotated_name("traces.jsonl.0"), Some(("traces.jsonl", 0)));
        assert_eq!(rotated_name("events.jsonl"), None);
        assert_eq!(rotated_name("events.jsonl.x1"), None);
        assert_eq!(rotated_name("signals.json.3"), None);
        assert_eq!(rotated_name("traces.jsonl."), None);
    }
}
