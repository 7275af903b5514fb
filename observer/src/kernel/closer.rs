//! Dropping BPF links off the event loop. Closing a uprobe link waits for
//! the kernel's grace periods under a kernel-wide lock: 0.1 s per link on a
//! busy 2-core machine, one after the other whatever the number of threads,
//! so detaching inline held up the attaching of new processes for seconds.
//! One thread closes links in the background, and starts no close while
//! the agent attaches ([`Closer::hold`]): attaching then waits for at most
//! the close in progress (the kernel's lock is not fair to one waiter
//! against a stream of closes). What is not closed yet when the agent exits,
//! the kernel closes with the process.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    thread,
    time::Duration,
};

type Item = Box<dyn Send>;

/// Hands owned links (anything whose drop releases kernel objects) to the
/// closing thread.
pub struct Closer {
    tx: Option<Sender<Item>>,
    gate: Arc<Gate>,
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
        let gate = Arc::new(Gate::default());
        let thread_gate = Arc::clone(&gate);
        match thread::Builder::new().name("observer-close".into()).spawn(move || work(&rx, &thread_gate)) {
            Ok(_) => Self { tx: Some(tx), gate },
            Err(err) => {
                tracing::warn!("no thread to close links on ({err}); detaching inline");
                Self { tx: None, gate }
            }
        }
    }

    /// Keeps closes from starting until the [`Hold`] is dropped.
    pub fn hold(&self) -> Hold {
        self.gate.holds.fetch_add(1, Ordering::SeqCst);
        Hold(Arc::clone(&self.gate))
    }

    /// Drops `what` on the closing thread (inline if there is none).
    pub fn close(&self, what: impl Send + 'static) {
        let Some(tx) = &self.tx else { return drop(what) };
        // The thread only ends with the sender, so this cannot fail; if it
        // did, the item comes back and is dropped here.
        if let Err(mpsc::SendError(item)) = tx.send(Box::new(what)) {
            drop(item);
        }
    }
}

impl Default for Closer {
    fn default() -> Self {
        Self::new()
    }
}

fn work(rx: &Receiver<Item>, gate: &Gate) {
    while let Ok(item) = rx.recv() {
        while gate.holds.load(Ordering::SeqCst) > 0 {
            thread::sleep(Duration::from_millis(1));
        }
        drop(item);
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
        for _ in 0..3 {
            closer.close(Slow(Arc::clone(&closed)));
        }
        thread::sleep(Duration::from_millis(300));
        assert_eq!(closed.load(Ordering::Relaxed), 0, "nothing closed while held");
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(30);
        while closed.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(closed.load(Ordering::Relaxed), 3, "every item dropped");
    }
}
