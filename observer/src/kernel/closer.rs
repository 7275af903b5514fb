//! Dropping BPF links off the event loop. Closing a uprobe link waits for
//! the kernel's grace periods under a kernel-wide lock: 0.1 s per link on a
//! busy 2-core machine, one after the other whatever the number of threads,
//! so detaching inline held up the attaching of new processes for seconds.
//! One thread closes links in the background, and starts no close while
//! the agent attaches ([`Closer::hold`]): attaching then waits for at most
//! the close in progress (the kernel's lock is not fair to one waiter
//! against a stream of closes). What is not closed yet when the agent exits,
//! the kernel closes with the process. Each item handed over comes back as
//! a token once it is closed ([`Closer::closed`]), so that the agent knows
//! when a binary's probes are gone (and a new set may be attached).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    thread,
    time::Duration,
};

type Item = (Box<dyn Send>, u64);

/// Hands owned links (anything whose drop releases kernel objects) to the
/// closing thread.
pub struct Closer {
    tx: Option<Sender<Item>>,
    gate: Arc<Gate>,
    /// Tokens of the items closed.
    done_tx: Sender<u64>,
    done: Receiver<u64>,
}

/// How many [`Hold`]s there are: no close starts while there are any.
#[derive(Default)]
struct Gate {
    holds: AtomicUsize,
}

/// Keeps closes from starting while it lives.
pub struct Hold(Arc<Gate>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.holds.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Closer {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel::<Item>();
        let (done_tx, done) = mpsc::channel();
        let gate = Arc::new(Gate::default());
        let (thread_gate, thread_done) = (Arc::clone(&gate), done_tx.clone());
        let spawned =
            thread::Builder::new().name("observer-close".into()).spawn(move || work(&rx, &thread_gate, &thread_done));
        let tx = match spawned {
            Ok(_) => Some(tx),
            Err(err) => {
                tracing::warn!("no thread to close links on ({err}); detaching inline");
                None
            }
        };
        Self { tx, gate, done_tx, done }
    }

    /// Keeps closes from starting until the [`Hold`] is dropped.
    pub fn hold(&self) -> Hold {
        self.gate.holds.fetch_add(1, Ordering::SeqCst);
        Hold(Arc::clone(&self.gate))
    }

    /// Drops `what` on the closing thread (inline if there is none); `token`
    /// comes out of [`Closer::closed`] once it is dropped.
    pub fn close(&self, what: impl Send + 'static, token: u64) {
        let item: Item = (Box::new(what), token);
        // The thread only ends with the sender, so sending cannot fail; if
        // it did, the item comes back and is dropped here.
        let item = match &self.tx {
            Some(tx) => match tx.send(item) {
                Ok(()) => return,
                Err(mpsc::SendError(item)) => item,
            },
            None => item,
        };
        drop(item.0);
        let _ = self.done_tx.send(item.1);
    }

    /// The tokens of what was closed since the last call.
    pub fn closed(&self) -> Vec<u64> {
        self.done.try_iter().collect()
    }
}

impl Default for Closer {
    fn default() -> Self {
        Self::new()
    }
}

fn work(rx: &Receiver<Item>, gate: &Gate, done: &Sender<u64>) {
    while let Ok((item, token)) = rx.recv() {
        while gate.holds.load(Ordering::SeqCst) > 0 {
            thread::sleep(Duration::from_millis(1));
        }
        drop(item);
        let _ = done.send(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    struct Slow(Arc<AtomicUsize>);

    impl Drop for Slow {
        fn drop(&mut self) {
            thread::sleep(Duration::from_millis(100));
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn closes_everything_and_waits_while_held() {
        let closer = Closer::new();
        let closed = Arc::new(AtomicUsize::new(0));
        let held = closer.hold();
        for token in 1..=3 {
            closer.close(Slow(Arc::clone(&closed)), token);
        }
        thread::sleep(Duration::from_millis(300));
        assert_eq!(closed.load(Ordering::Relaxed), 0, "nothing closed while held");
        assert!(closer.closed().is_empty());
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut tokens = Vec::new();
        while tokens.len() < 3 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
            tokens.extend(closer.closed());
        }
        assert_eq!(closed.load(Ordering::Relaxed), 3, "every item dropped");
        assert_eq!(tokens, vec![1, 2, 3], "each token once, after its item");
    }
}
