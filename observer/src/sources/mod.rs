//! Signal sources: one module per signal, each turning kernel records into
//! [`Record`]s. Once attached, every source looks the same to the agent
//! ([`Source`]): it decodes the ring-buffer kinds it owns, and may emit
//! summaries on a tick, hold records back briefly, or do slow work between
//! batches. Adding a signal touches its own module and the list in
//! `attach::all`, not the agent's loop.

pub mod abort_on_data;
pub mod attach;
pub mod drops;
pub mod goruntime;
pub mod memcg;
pub mod net;
pub mod retransmit;
pub mod ring;
pub mod signals;
pub mod tcp;

use aya::Ebpf;
use observer_common::EventKind;

use crate::{cgroup::CgroupPaths, event::Record, kernel::clock::Clock, netns::NetnsOwners};

/// What a source may use while decoding.
pub struct Context<'a> {
    pub cgroups: &'a mut CgroupPaths,
    /// Who uses each network namespace (shared with the attribution stage).
    pub netns: &'a mut NetnsOwners,
    pub clock: &'a Clock,
}

impl Context<'_> {
    /// A record stamped with the kernel's CLOCK_MONOTONIC time `ts_ns`.
    pub fn record(&self, ts_ns: u64, event: crate::event::Event) -> Record {
        let (time, time_unix_nano) = self.clock.wall(ts_ns);
        Record { time, time_unix_nano, event }
    }

    /// A record stamped now.
    pub fn record_now(&self, event: crate::event::Event) -> Record {
        self.record(crate::kernel::clock::monotonic_ns(), event)
    }
}

/// One attached signal source.
pub trait Source {
    /// The ring-buffer record kinds it decodes (no two sources share one).
    fn kinds(&self) -> &'static [EventKind];

    /// Decodes one ring-buffer record of one of its kinds into `out`
    /// (none, one or several records).
    fn decode(&mut self, kind: EventKind, bytes: &[u8], cx: &mut Context<'_>, out: &mut Vec<Record>);

    /// After each batch: passes on records it held back (all when `last`).
    fn flush(&mut self, _last: bool, _out: &mut Vec<Record>) {}

    /// About once a second, and with `last` at stop: counts kept in the kernel.
    fn tick(&mut self, _cx: &mut Context<'_>, _last: bool, _out: &mut Vec<Record>) {}

    /// Between batches, off the ring-buffer reader's thread: slow work such
    /// as attaching to new processes.
    fn poll(&mut self, _ebpf: &mut Ebpf) {}

    /// Its part of the ready line.
    fn ready(&self) -> String;

    /// Its part of the status line, if any.
    fn status(&self) -> Option<String> {
        None
    }

    /// Its gauges and counters for `/metrics`, if any.
    fn metrics(&self) -> Vec<crate::export::metrics::SourceMetric> {
        Vec::new()
    }

    /// Its part of the stopped line (` key=value …`).
    fn stopped(&self) -> String {
        String::new()
    }
}

/// Reads a `#[repr(C)]` record from the start of a ring buffer item.
pub(crate) fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>())
        // SAFETY: length checked; T is plain old data; the read is unaligned-safe.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A kernel `comm` (NUL-padded) as text.
pub(crate) fn comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}
