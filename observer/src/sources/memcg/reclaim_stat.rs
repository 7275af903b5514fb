//! The `stat` mechanism of memcg reclaim: the reclaim counters of each
//! watched cgroup's `memory.stat`, read by the `memory.events` watcher
//! (`super::events`) when that cgroup's `memory.events` changes (reclaim
//! against a limit goes with `high`/`max` rising there), on a slow timer
//! (reclaim by kswapd or `memory.reclaim` leaves `memory.events` alone), and
//! once more at stop; a rise is sent as `memcg.reclaim.stat`.
//!
//! Used when the `vmscan:mm_vmscan_memcg_reclaim_*` tracepoints cannot be
//! attached, or when forced (`--memcg-reclaim stat`). These numbers are not
//! the tracepoint's `nr_reclaimed` and are never equated with it:
//! - `pgsteal`/`pgscan` count pages taken off (scanned on) this cgroup's LRU
//!   lists by every reclaimer: kswapd (`_kswapd`) and global direct reclaim
//!   as well as memcg reclaim against `memory.high`/`memory.max` (both in
//!   `_direct`), proactive `memory.reclaim`, and, from 6.2, khugepaged. The
//!   memcg tracepoints fire only around `try_to_free_mem_cgroup_pages`.
//! - The file is hierarchical: a parent's counts include every descendant's
//!   pages, whoever reclaimed them. A tracepoint run is attributed to the
//!   cgroup of the task that ran it, and its `nr_reclaimed` covers the whole
//!   subtree it reclaimed (the limited cgroup may be an ancestor).
//! - `nr_reclaimed` can include slab pages freed by the shrinkers a run
//!   called, which are on no LRU list and never in `pgsteal`.
//! - The counters are per-CPU and flushed lazily (`memory.stat` reads flush
//!   them, rate-limited on some kernels), so a read right after a burst may
//!   lag; the next read or the one at stop catches up.
//! - A summary covers a span of time, not one run: no duration, no task.
//!
//! In the VM tests a single task over `memory.high` gave `pgsteal_direct`
//! rises of about 1000 pages while the runs' `nr_reclaimed` summed to about
//! 85 (`shared/ENVIRONMENT.md`).

use std::path::Path;

use crate::event::ReclaimStatCounts;

/// `memory.stat` of the cgroup at `dir`, or `None` when it cannot be read.
pub fn read(dir: &Path) -> Option<ReclaimStatCounts> {
    std::fs::read_to_string(dir.join("memory.stat")).ok().map(|t| parse(&t))
}

/// `memory.stat` text → the reclaim counters (missing ones 0; `pgscan` and
/// `pgsteal` summed from the per-reclaimer lines when the file lacks them).
pub fn parse(text: &str) -> ReclaimStatCounts {
    let mut c = ReclaimStatCounts::default();
    let (mut pgscan, mut pgsteal) = (None, None);
    let (mut scan_others, mut steal_others) = (0u64, 0u64);
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next().and_then(|v| v.parse::<u64>().ok())) else {
            continue;
        };
        match key {
            "pgscan" => pgscan = Some(value),
            "pgsteal" => pgsteal = Some(value),
            "pgscan_kswapd" => c.pgscan_kswapd = value,
            "pgscan_direct" => c.pgscan_direct = value,
            "pgsteal_kswapd" => c.pgsteal_kswapd = value,
            "pgsteal_direct" => c.pgsteal_direct = value,
            k if k.starts_with("pgscan_") => scan_others += value,
            k if k.starts_with("pgsteal_") => steal_others += value,
            _ => {}
        }
    }
    c.pgscan = pgscan.unwrap_or(c.pgscan_kswapd + c.pgscan_direct + scan_others);
    c.pgsteal = pgsteal.unwrap_or(c.pgsteal_kswapd + c.pgsteal_direct + steal_others);
    c
}

impl ReclaimStatCounts {
    /// The rise from `before`; a counter never falls, so a fall reads as 0.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            pgscan: self.pgscan.saturating_sub(before.pgscan),
            pgsteal: self.pgsteal.saturating_sub(before.pgsteal),
            pgscan_kswapd: self.pgscan_kswapd.saturating_sub(before.pgscan_kswapd),
            pgscan_direct: self.pgscan_direct.saturating_sub(before.pgscan_direct),
            pgsteal_kswapd: self.pgsteal_kswapd.saturating_sub(before.pgsteal_kswapd),
            pgsteal_direct: self.pgsteal_direct.saturating_sub(before.pgsteal_direct),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reclaim_counters_and_deltas() {
        // 6.12: summed lines present, khugepaged counted in them.
        let before = parse(
            "anon 4096\npgscan 10\npgsteal 8\npgscan_kswapd 2\npgscan_direct 7\npgscan_khugepaged 1\npgsteal_kswapd 2\npgsteal_direct 6\npgsteal_khugepaged 0\n",
        );
        let after = parse(
            "anon 4096\npgscan 30\npgsteal 20\npgscan_kswapd 2\npgscan_direct 27\npgscan_khugepaged 1\npgsteal_kswapd 2\npgsteal_direct 18\npgsteal_khugepaged 0\n",
        );
        let d = after.since(&before);
        assert_eq!((d.pgscan, d.pgsteal, d.pgscan_direct, d.pgsteal_direct, d.pgscan_kswapd), (20, 12, 20, 12, 0));
        // Without the summed lines: the per-reclaimer ones added up.
        let old = parse("pgscan_kswapd 3\npgscan_direct 4\npgsteal_kswapd 1\npgsteal_direct 2\n");
        assert_eq!((old.pgscan, old.pgsteal), (7, 3));
    }
}
