//! The ring-buffer reader: a thread of its own that copies records out of
//! the kernel's ring buffer into batches and hands them to the agent over a
//! bounded channel. It never waits for the agent: a batch that does not fit
//! waits in the reader, growing, up to a bound past which records are dropped
//! and counted: a slow sink can cost records but never stall the kernel side
//! (whose own losses are the `LOST` counter).

use std::{
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::sync::mpsc::{self, Receiver, Sender, error::TrySendError};

/// The programs wake the reader only once a batch is pending (`BPF_RB_NO_WAKEUP`
/// below 32 KiB); this is the longest a lone record waits.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Batches in flight to the agent.
const BATCHES: usize = 64;
/// Records the reader holds while the agent's channel is full, at most.
const HELD_RECORDS: usize = 1 << 17;

/// Records copied out of the ring buffer, back to back.
#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(a, b)| &self.bytes[a..b])
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    fn push(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len());
    }
}

pub struct RingReader {
    pub rx: Receiver<Batch>,
    stop: Arc<AtomicBool>,
    /// Records dropped because the agent's channel was full.
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RingReader {
    pub fn start(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(BATCHES);
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), dropped.clone());
        let thread = std::thread::Builder::new()
            .name("ring-reader".into())
            .spawn(move || read_loop(ring, &tx, &flag, &count))?;
        Ok(Self { rx, stop, dropped, thread: Some(thread) })
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Tells the thread to take what is left (the programs are detached by
    /// now) and end; the channel closes once it has. Keep receiving until then.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Let a final blocking send through before waiting for the thread.
        self.rx.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_loop(mut ring: RingBuf<MapData>, tx: &Sender<Batch>, stop: &AtomicBool, dropped: &AtomicU64) {
    let timeout = PollTimeout::try_from(DRAIN_EVERY).unwrap_or(PollTimeout::NONE);
    // What the agent has not taken yet: sent when the channel has room,
    // grown meanwhile up to HELD_RECORDS (then records are dropped, counted).
    let mut held = Batch::default();
    loop {
        let last = stop.load(Ordering::Relaxed);
        if !last {
            let mut fds = [PollFd::new(ring.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, timeout);
        }
        while let Some(item) = ring.next() {
            if held.len() < HELD_RECORDS {
                held.push(&item);
            } else {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if held.len() > 0 {
            if last {
                // At stop the agent is draining: waiting for room is safe then.
                let n = held.len() as u64;
                if tx.blocking_send(std::mem::take(&mut held)).is_err() {
                    dropped.fetch_add(n, Ordering::Relaxed);
                }
            } else {
                held = match tx.try_send(std::mem::take(&mut held)) {
                    Ok(()) => Batch::default(),
                    Err(TrySendError::Full(batch)) => batch,
                    Err(TrySendError::Closed(batch)) => {
                        dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        Batch::default()
                    }
                };
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_its_records() {
        let mut b = Batch::default();
        b.push(b"one");
        b.push(b"");
        b.push(b"three");
        let all: Vec<&[u8]> = b.iter().collect();
        assert_eq!(all, vec![&b"one"[..], &b""[..], &b"three"[..]]);
    }
}
