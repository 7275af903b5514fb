//! Running a closure on a thread that has entered a test's network
//! namespace: sockets it creates live there. Only that thread moves
//! (`setns(CLONE_NEWNET)` is per thread); the test process stays put.

use std::fs::File;

use nix::sched::{CloneFlags, setns};

use crate::netns::Netns;

/// Runs `f` on a new thread inside `ns` and returns its result.
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", ns.name());
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
