//! Events as JSON lines, appended to `<output-dir>/events.jsonl` by a thread
//! of its own behind a bounded queue: a slow disk drops lines (counted), it
//! never stalls the agent.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::disk::{BudgetedFile, Disk};
use crate::event::Record;

pub const FILE_NAME: &str = "events.jsonl";
/// Records waiting for the writer at most.
const QUEUE: usize = 65536;
/// The writer flushes at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Lines are written in chunks of about this size (whole lines).
const CHUNK: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output directory {dir} is not usable: {error}")]
    Dir { dir: PathBuf, error: std::io::Error },
    #[error("cannot start the events.jsonl writer: {0}")]
    Thread(std::io::Error),
}

pub struct JsonlWriter {
    path: PathBuf,
    tx: Option<SyncSender<Record>>,
    /// Lines not written: the queue was full, or the file could not be written.
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl JsonlWriter {
    /// Opens the file for appending in the (created) directory, so an
    /// unwritable directory is reported before any program is attached.
    pub fn create(disk: &Arc<Disk>) -> Result<Self, OutputError> {
        let file = BudgetedFile::open(disk, FILE_NAME)
            .map_err(|error| OutputError::Dir { dir: disk.dir().to_path_buf(), error })?;
        let path = file.path().to_path_buf();
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let thread = std::thread::Builder::new()
            .name("events-jsonl".into())
            .spawn(move || write_loop(&rx, file, &counter))
            .map_err(OutputError::Thread)?;
        Ok(Self { path, tx: Some(tx), dropped, thread: Some(thread) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues one record; never waits.
    pub fn write(&self, record: &Record) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(record.clone()) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes what is queued and closes the file.
    pub fn close(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for JsonlWriter {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_loop(rx: &Receiver<Record>, mut out: BudgetedFile, dropped: &AtomicU64) {
    let mut chunk = Vec::with_capacity(CHUNK + 4096);
    let mut lines = 0u64;
    let mut flush = |chunk: &mut Vec<u8>, lines: &mut u64| {
        if !chunk.is_empty() && out.append(chunk).is_err() {
            // Why is on the status line (the disk's state).
            dropped.fetch_add(*lines, Ordering::Relaxed);
        }
        chunk.clear();
        *lines = 0;
    };
    // Written at CHUNK bytes, and at least every FLUSH_EVERY even while
    // records keep coming, so that a reader of the file is at most that late.
    let mut flushed = Instant::now();
    loop {
        match rx.recv_timeout(FLUSH_EVERY.saturating_sub(flushed.elapsed())) {
            Ok(record) => {
                if serde_json::to_writer(&mut chunk, &record).is_ok() {
                    chunk.push(b'\n');
                    lines += 1;
                } else {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                if chunk.len() >= CHUNK || flushed.elapsed() >= FLUSH_EVERY {
                    flush(&mut chunk, &mut lines);
                    flushed = Instant::now();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                flush(&mut chunk, &mut lines);
                flushed = Instant::now();
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    flush(&mut chunk, &mut lines);
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Attribution, CgroupSource, Direction, Event, TcpReset, Workload};

    #[test]
    fn appends_one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let record = Record {
            time: "2026-11-25T17:00:00.000000001Z".into(),
            time_unix_nano: 1,
            event: Event::TcpReset(TcpReset {
                direction: Direction::Sent,
                family: "ipv4",
                local_addr: "127.0.0.1".parse().unwrap(),
                local_port: 80,
                remote_addr: "127.0.0.1".parse().unwrap(),
                remote_port: 4000,
                state: Some("TCP_CLOSE"),
                reason: Some("NO_SOCKET".into()),
                netns: 4026531840,
                who: Attribution {
                    cgroup_id: Some(1),
                    cgroup_path: Some("/".into()),
                    cgroup_source: CgroupSource::Socket,
                    workload: Workload::from_cgroup_path(Some(
                        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f5e6a4c_1b2d_4c3e_9f80_a1b2c3d4e5f6.slice/cri-containerd-8b3f5f0a9c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f.scope",
                    )),
                    pid: Some(42),
                    comm: Some("curl".into()),
                },
            }),
        };
        for _ in 0..2 {
            let disk = Disk::new(dir.path(), super::super::disk::DEFAULT_BUDGET);
            let mut w = JsonlWriter::create(&disk).unwrap();
            w.write(&record);
            w.close();
            assert_eq!(w.dropped(), 0);
        }
        let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["kind"], "tcp.reset");
        assert_eq!(lines[0]["direction"], "sent");
        assert_eq!(lines[0]["local_port"], 80);
        assert_eq!(lines[0]["cgroup_source"], "socket");
        assert_eq!(lines[0]["pid"], 42);
        assert_eq!(lines[0]["k8s_pod_uid"], "0f5e6a4c-1b2d-4c3e-9f80-a1b2c3d4e5f6");
        assert_eq!(lines[0]["k8s_pod_qos"], "besteffort");
        assert_eq!(lines[0]["container_runtime"], "containerd");
        assert_eq!(lines[0]["container_id"], "8b3f5f0a9c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f");
        assert_eq!(lines[0]["netns"], 4026531840u64);
    }

    #[test]
    fn a_file_in_the_way_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let err = Disk::create(&file.join("out"), super::super::disk::DEFAULT_BUDGET).err().unwrap();
        assert!(err.to_string().contains("f/out"), "{err}");
    }
}
