//! The kernel's clock (CLOCK_MONOTONIC, what `bpf_ktime_get_ns()` reads) and
//! its mapping to wall-clock time.
//!
//! NTP slews CLOCK_MONOTONIC together with CLOCK_REALTIME, so the offset
//! between them changes only when the wall clock is *stepped*: `date -s`,
//! an NTP step (chrony's `makestep`, ntpd past 128 ms), a leap second, a
//! resume from suspend. [`Clock`] reads that offset again every
//! [`RESYNC_EVERY`] and follows a change:
//! - forward: at once (mapped times jump ahead, never back);
//! - back by at most [`SLEW_LIMIT`]: mapped time runs at half speed until it
//!   has caught up, so records stay in order for the episode engine (a
//!   leap second, an ntpd step);
//! - back by more: at once; records after it may fall before episodes
//!   already closed (the engine counts those as late).

use std::time::Duration;

/// How often the agent reads the offset again.
pub const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// Offset changes at most this small are left alone (a read of the pair
/// is good to a few µs; this is well above that).
const NOISE_NS: i128 = 100_000;
/// A pair of reads further apart than this (preempted between them) is not used.
const MAX_READ_GAP_NS: u64 = 50_000;
/// Largest backward change that is slewed rather than stepped.
pub const SLEW_LIMIT: Duration = Duration::from_secs(1);

/// CLOCK_MONOTONIC in ns.
pub fn monotonic_ns() -> u64 {
    clock_ns(nix::time::ClockId::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in Unix ns.
pub fn realtime_ns() -> u64 {
    clock_ns(nix::time::ClockId::CLOCK_REALTIME)
}

fn clock_ns(id: nix::time::ClockId) -> u64 {
    nix::time::clock_gettime(id)
        .map(|t| u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0))
        .unwrap_or(0)
}

/// One reading of CLOCK_REALTIME − CLOCK_MONOTONIC, at monotonic `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub at: u64,
    pub offset: i128,
}

impl Reading {
    /// Monotonic, realtime, monotonic: the realtime read lies between the
    /// two others; the closest of a few such triples is kept.
    pub fn take() -> Option<Reading> {
        (0..5)
            .filter_map(|_| {
                let before = monotonic_ns();
                let real = realtime_ns();
                let after = monotonic_ns();
                let gap = after.checked_sub(before)?;
                let mid = before + gap / 2;
                Some((gap, Reading { at: mid, offset: i128::from(real) - i128::from(mid) }))
            })
            .min_by_key(|&(gap, _)| gap)
            .filter(|&(gap, _)| gap <= MAX_READ_GAP_NS)
            .map(|(_, reading)| reading)
    }
}

/// What a new reading changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Taken at once; ns, positive forward.
    Stepped(i128),
    /// Back by this many ns (negative), caught up over twice that time.
    Slewing(i128),
}

/// Maps the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
///
/// The offset is `from` before monotonic `since` and `to` after it (when
/// slewing, it moves from one to the other at 0.5 ns per ns). It is a
/// function of the record's own kernel time, so a record read late (from
/// the ring buffer, after a change) gets the offset of its moment; only the
/// latest change is remembered.
#[derive(Debug, Clone)]
pub struct Clock {
    from: i128,
    to: i128,
    since: u64,
    slewing: bool,
    /// Changes followed since start.
    steps: u64,
    slews: u64,
}

impl Clock {
    pub fn now() -> Self {
        let reading = Reading::take().unwrap_or_else(|| {
            let at = monotonic_ns();
            Reading { at, offset: i128::from(realtime_ns()) - i128::from(at) }
        });
        Self::at(reading)
    }

    /// A clock with the offset of `reading`.
    pub fn at(reading: Reading) -> Self {
        Self { from: reading.offset, to: reading.offset, since: reading.at, slewing: false, steps: 0, slews: 0 }
    }

    /// The offset at monotonic `ns`.
    fn offset(&self, ns: u64) -> i128 {
        if ns < self.since {
            return self.from;
        }
        if !self.slewing {
            return self.to;
        }
        // Back by half the time since `since`, until `to` is reached.
        (self.from - i128::from(ns - self.since) / 2).max(self.to)
    }

    /// Reads the offset again (see the module's comment) and follows it.
    pub fn resync(&mut self) -> Option<Change> {
        self.follow(Reading::take()?)
    }

    /// Follows a new reading; `None` when it agrees with where the offset
    /// is (or, slewing, is going).
    pub fn follow(&mut self, reading: Reading) -> Option<Change> {
        if (reading.offset - self.to).abs() <= NOISE_NS || reading.at < self.since {
            return None;
        }
        let current = self.offset(reading.at);
        let delta = reading.offset - current;
        self.from = current;
        self.to = reading.offset;
        self.since = reading.at;
        self.slewing = delta < 0 && delta.unsigned_abs() <= SLEW_LIMIT.as_nanos();
        if self.slewing {
            self.slews += 1;
            Some(Change::Slewing(delta))
        } else {
            self.steps += 1;
            Some(Change::Stepped(delta))
        }
    }

    /// (steps, slews) followed since start.
    pub fn changes(&self) -> (u64, u64) {
        (self.steps, self.slews)
    }

    /// Unix ns of a CLOCK_MONOTONIC instant.
    pub fn unix_nano(&self, monotonic_ns: u64) -> u64 {
        u64::try_from(i128::from(monotonic_ns) + self.offset(monotonic_ns)).unwrap_or(0)
    }

    /// Unix ns now, on this clock (what the episode engine takes as now).
    pub fn now_unix_nano(&self) -> u64 {
        self.unix_nano(monotonic_ns())
    }

    /// (RFC 3339 text, Unix ns) of a CLOCK_MONOTONIC instant.
    pub fn wall(&self, monotonic_ns: u64) -> (String, u64) {
        let unix = self.unix_nano(monotonic_ns);
        (rfc3339(unix), unix)
    }
}

/// RFC 3339, UTC, nanoseconds.
pub fn rfc3339(unix_nano: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_nano))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

impl std::fmt::Display for Change {
    /// `stepped +5.000000s`, `slewing -0.300000s back over 0.6s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |ns: i128| ns as f64 / 1e9;
        match *self {
            Change::Stepped(ns) => write!(f, "stepped {:+.6}s", secs(ns)),
            Change::Slewing(ns) => write!(f, "slewing {:+.6}s over {:.1}s", secs(ns), secs(-2 * ns)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const OFFSET: i128 = 1_700_000_000 * S as i128;

    fn reading(at: u64, offset: i128) -> Reading {
        Reading { at, offset }
    }

    #[test]
    fn maps_with_the_offset_taken_at_start() {
        let clock = Clock::at(reading(10 * S, OFFSET));
        assert_eq!(clock.unix_nano(12 * S), (OFFSET + 12 * S as i128) as u64);
        assert_eq!(clock.unix_nano(5 * S), (OFFSET + 5 * S as i128) as u64, "before the reading too");
    }

    #[test]
    fn noise_is_left_alone() {
        let mut clock = Clock::at(reading(10 * S, OFFSET));
        assert_eq!(clock.follow(reading(11 * S, OFFSET + NOISE_NS)), None);
        assert_eq!(clock.follow(reading(12 * S, OFFSET - NOISE_NS)), None);
        assert_eq!(clock.unix_nano(13 * S), (OFFSET + 13 * S as i128) as u64);
        assert_eq!(clock.changes(), (0, 0));
    }

    #[test]
    fn a_forward_step_is_followed_from_its_reading_on() {
        let mut clock = Clock::at(reading(10 * S, OFFSET));
        let step = 5 * S as i128;
        assert_eq!(clock.follow(reading(20 * S, OFFSET + step)), Some(Change::Stepped(step)));
        // A record from before the reading, decoded after it, keeps the old offset.
        assert_eq!(clock.unix_nano(19 * S), (OFFSET + 19 * S as i128) as u64);
        assert_eq!(clock.unix_nano(21 * S), (OFFSET + step + 21 * S as i128) as u64);
        assert_eq!(clock.follow(reading(22 * S, OFFSET + step)), None, "once is enough");
        assert_eq!(clock.changes(), (1, 0));
    }

    #[test]
    fn a_small_step_back_is_slewed_and_mapped_time_never_goes_back() {
        let mut clock = Clock::at(reading(10 * S, OFFSET));
        let back = -(S as i128) / 2;
        assert_eq!(clock.follow(reading(20 * S, OFFSET + back)), Some(Change::Slewing(back)));
        let mut last = 0;
        for ms in 19_000..22_000u64 {
            let t = clock.unix_nano(ms * 1_000_000);
            assert!(t > last, "mapped time went back at {ms} ms: {t} after {last}");
            last = t;
        }
        // Half speed: 0.25 s caught up after 0.5 s, all of it after 1 s.
        assert_eq!(clock.unix_nano(20 * S + S / 2), (OFFSET - S as i128 / 4 + (20 * S + S / 2) as i128) as u64);
        assert_eq!(clock.unix_nano(21 * S), (OFFSET + back + 21 * S as i128) as u64);
        assert_eq!(clock.unix_nano(30 * S), (OFFSET + back + 30 * S as i128) as u64);
        // Readings on the way agree with where it is going.
        assert_eq!(clock.follow(reading(20 * S + S / 4, OFFSET + back)), None);
        assert_eq!(clock.changes(), (0, 1));
    }

    #[test]
    fn a_new_change_while_slewing_starts_from_where_the_slew_was() {
        let mut clock = Clock::at(reading(10 * S, OFFSET));
        clock.follow(reading(20 * S, OFFSET - S as i128 / 2));
        let midway = clock.unix_nano(20 * S + S / 2);
        let step = 3 * S as i128;
        // Back where it was, and 3 s on: forward from the slew's midpoint.
        assert_eq!(clock.follow(reading(20 * S + S / 2, OFFSET + step)), Some(Change::Stepped(step + S as i128 / 4)));
        assert_eq!(clock.unix_nano(20 * S + S / 2 - 1), midway - 1, "just before: the offset the slew had reached");
        assert_eq!(clock.unix_nano(25 * S), (OFFSET + step + 25 * S as i128) as u64);
    }

    #[test]
    fn a_large_step_back_is_taken_at_once() {
        let mut clock = Clock::at(reading(10 * S, OFFSET));
        let back = -3600 * S as i128;
        assert_eq!(clock.follow(reading(20 * S, OFFSET + back)), Some(Change::Stepped(back)));
        assert_eq!(clock.unix_nano(19 * S), (OFFSET + 19 * S as i128) as u64);
        assert_eq!(clock.unix_nano(20 * S), (OFFSET + back + 20 * S as i128) as u64);
        assert_eq!(clock.changes(), (1, 0));
    }

    #[test]
    fn a_reading_is_close_to_the_real_clocks() {
        let reading = Reading::take().expect("an unpreempted read in five");
        let expected = i128::from(realtime_ns()) - i128::from(monotonic_ns());
        assert!((reading.offset - expected).abs() < 1_000_000, "{} vs {expected}", reading.offset);
        let clock = Clock::at(reading);
        let (before, mapped, after) = (realtime_ns(), clock.now_unix_nano(), realtime_ns());
        assert!(before.saturating_sub(1_000_000) <= mapped && mapped <= after + 1_000_000);
    }

    #[test]
    fn changes_read_well() {
        assert_eq!(Change::Stepped(5 * S as i128).to_string(), "stepped +5.000000s");
        assert_eq!(Change::Slewing(-(S as i128) / 2).to_string(), "slewing -0.500000s over 1.0s");
    }
}
