//! The kernel's clock (CLOCK_MONOTONIC, what `bpf_ktime_get_ns()` reads) and
//! its mapping to wall-clock time.

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

/// Maps the kernel's CLOCK_MONOTONIC timestamps to wall-clock time, with the
/// offset taken once at start.
pub struct Clock {
    realtime_minus_monotonic: i128,
}

impl Clock {
    pub fn now() -> Self {
        let mono = monotonic_ns();
        let real = realtime_ns();
        Self { realtime_minus_monotonic: i128::from(real) - i128::from(mono) }
    }

    /// Unix ns of a CLOCK_MONOTONIC instant.
    pub fn unix_nano(&self, monotonic_ns: u64) -> u64 {
        u64::try_from(i128::from(monotonic_ns) + self.realtime_minus_monotonic).unwrap_or(0)
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
