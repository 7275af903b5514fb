//! Events as JSON lines, appended to `<output-dir>/events.jsonl` by a thread
//! of its own behind a bounded queue: a slow disk drops lines (counted), it
//! never stalls the agent.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::event::Record;

/// Records waiting for the writer at most.
const QUEUE: usize = 65536;
/// The writer flushes at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

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
    /// Creates the directory and opens the file for appending, so an
    /// unwritable directory is reported before any program is attached.
    pub fn create(dir: &Path) -> Result<Self, OutputError> {
        let dir_err = |error| OutputError::Dir { dir: dir.to_path_buf(), error };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        let path = dir.join("events.jsonl");
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(dir_err)?;
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let thread = std::thread::Builder::new()
            .name("events-jsonl".into())
            .spawn(move || write_loop(&rx, BufWriter::new(file), &counter))
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

fn write_loop(rx: &Receiver<Record>, mut out: BufWriter<File>, dropped: &AtomicU64) {
    let mut failed = false;
    loop {
        match rx.recv_timeout(FLUSH_EVERY) {
            Ok(record) => {
                let ok = serde_json::to_writer(&mut out, &record).is_ok() && out.write_all(b"\n").is_ok();
                if !ok {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    if !failed {
                        tracing::warn!("writing events.jsonl failed; lines are counted as dropped");
                        failed = true;
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = out.flush();
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
            let mut w = JsonlWriter::create(dir.path()).unwrap();
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
        let err = JsonlWriter::create(&file.join("out")).err().unwrap();
        assert!(err.to_string().contains("f/out"), "{err}");
    }
}
