//! Symbolizes and writes profiles on a thread of its own: reading a large
//! binary's tables takes long, and the agent's loop must not wait for it.
//! The queue is bounded; a profile that finds it full is dropped and counted.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError},
    },
    time::Duration,
};

use super::{
    flamegraph,
    pprof::{self, Meta},
    slices::Selection,
    symbolize::Symbolizer,
};
use crate::export::{
    disk::Disk,
    otlp::{profile_export::ProfileSender, profiles::EpisodeLink},
};

/// Profiles waiting to be written (at a window's end: two per watched
/// process, and a busy build node runs many short Go processes).
const QUEUE: usize = 256;

/// One profile to write, at `name` inside the output directory.
pub struct Job {
    pub name: String,
    pub selection: Selection,
    pub meta: Meta,
    /// An episode's profile: its flame graph is written too, and with a
    /// sender it goes to the collector, linked to the episode.
    pub episode: Option<(EpisodeLink, Option<ProfileSender>)>,
}

#[derive(Debug, Default)]
pub struct WriterCounters {
    pub written: AtomicU64,
    /// The queue was full.
    pub dropped: AtomicU64,
    /// Writing failed (disk full, budget stopped).
    pub failed: AtomicU64,
    pub bytes: AtomicU64,
}

pub struct ProfileWriter {
    tx: Option<SyncSender<Job>>,
    /// Set during the stop's flush: the episodes' export gets the CPU first.
    held: Arc<AtomicBool>,
    /// Told when the thread has written everything and ended.
    done: Receiver<()>,
    pub counters: Arc<WriterCounters>,
}

impl ProfileWriter {
    pub fn start(disk: Arc<Disk>) -> std::io::Result<ProfileWriter> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let counters = Arc::new(WriterCounters::default());
        let c = counters.clone();
        let (ended, done) = std::sync::mpsc::channel();
        let held = Arc::new(AtomicBool::new(false));
        let h = held.clone();
        std::thread::Builder::new().name("profiles".into()).spawn(move || {
            run(rx, &disk, &c, &h);
            let _ = ended.send(());
        })?;
        Ok(ProfileWriter { tx: Some(tx), held, done, counters })
    }

    /// Queues `job`; false when the queue is full (counted).
    pub fn offer(&self, job: Job) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Holds the writing (at stop, until [`ProfileWriter::finish`]).
    pub fn hold(&self) {
        self.held.store(true, Ordering::Relaxed);
    }

    /// Lets the thread write what is queued, waiting at most `within` (the
    /// stop's deadline: what is still unwritten then goes with the process);
    /// whether it finished.
    pub fn finish(&mut self, within: Duration) -> bool {
        self.tx = None;
        self.held.store(false, Ordering::Relaxed);
        self.done.recv_timeout(within).is_ok()
    }
}

fn run(rx: Receiver<Job>, disk: &Disk, counters: &WriterCounters, held: &AtomicBool) {
    let mut symbols = Symbolizer::default();
    // Now, not at the first profile (which may come at the stop): slow under load.
    symbols.load_kernel();
    for job in rx {
        while held.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let profile = pprof::build(&job.selection, &mut symbols, &job.meta);
        let bytes = pprof::gzipped(&profile);
        match disk.write_whole(&job.name, &bytes) {
            Ok(_) => {
                counters.written.fetch_add(1, Ordering::Relaxed);
                counters.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("profile not written: {e}");
            }
        }
        if let Some((link, to)) = &job.episode {
            flamegraph::write(disk, &job.name, &profile, &link.workload.service_name);
            if let Some(to) = to {
                to.offer(&profile, link);
            }
        }
    }
}
