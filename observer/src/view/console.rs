//! The agent's own lines on stderr (ready, attached, stopped, its
//! diagnostics). While the live view owns the terminal they are held back
//! (bounded; the newest is shown in the view) and printed when it gives the
//! terminal back. Every line is escaped: a workload's name in one cannot
//! drive the terminal.

use std::{
    collections::VecDeque,
    io::Write,
    sync::{Mutex, MutexGuard},
};

use crate::export::live::printable;

/// Lines held back at most while the view owns the terminal; older ones are
/// dropped (counted).
const MAX_HELD: usize = 1000;

#[derive(Default)]
struct Console {
    holding: bool,
    held: VecDeque<String>,
    dropped: u64,
    latest: Option<String>,
}

static CONSOLE: Mutex<Console> =
    Mutex::new(Console { holding: false, held: VecDeque::new(), dropped: 0, latest: None });

fn console() -> MutexGuard<'static, Console> {
    CONSOLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One line of the agent's (no newline), escaped.
pub fn line(text: &str) {
    let text = printable(text);
    let mut c = console();
    c.latest = Some(text.clone());
    if c.holding {
        if c.held.len() >= MAX_HELD {
            c.held.pop_front();
            c.dropped += 1;
        }
        c.held.push_back(text);
        return;
    }
    drop(c);
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// From now on lines are held back, when stderr is the terminal the view
/// draws on (redirected, they go on to their file).
pub fn hold() {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        console().holding = true;
    }
}

/// Prints what was held back and stops holding.
pub fn release() {
    let mut c = console();
    c.holding = false;
    let held: Vec<String> = c.held.drain(..).collect();
    let dropped = std::mem::take(&mut c.dropped);
    drop(c);
    let mut err = std::io::stderr().lock();
    if dropped > 0 {
        let _ = writeln!(err, "observer: {dropped} earlier lines of the agent's were dropped while the live view ran");
    }
    for l in held {
        let _ = writeln!(err, "{l}");
    }
}

/// The newest line, for the view's message line.
pub fn latest() -> Option<String> {
    console().latest.clone()
}

/// A `tracing` writer (`with_writer(Writer::default)`): each event's text becomes [`line`]s.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Write for Writer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        for l in text.lines() {
            line(l);
        }
    }
}
