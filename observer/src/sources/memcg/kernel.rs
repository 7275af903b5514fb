//! Tasks throttled over `memory.high` and memcg reclaim runs, from kernel hooks.
//!
//! Throttling: `mem_cgroup_handle_over_high` is where a task that charged
//! pages above its cgroup's (or an ancestor's) `memory.high` pays for them:
//! it reclaims, then sleeps a penalty. fentry/fexit on it where the kernel
//! allows, else kprobe/kretprobe; the pair gives the time spent. The kernel
//! also calls it with nothing to do (no page over the limit) on every return
//! to user mode that handles `TIF_NOTIFY_RESUME`; those calls are counted per
//! cgroup in the kernel (`memcg.throttle.idle`), not sent one by one.
//! Where neither hook works, throttling is inferred from the memcg reclaim
//! tracepoints in the task's own context (`vmscan`): every memcg reclaim run
//! a task does itself is reported as a throttle of that task. That covers the
//! reclaim part of the over-`memory.high` path (and direct reclaim on a charge
//! over `memory.max`, which it cannot tell apart) but never the penalty sleep.
//!
//! Reclaim: `vmscan:mm_vmscan_memcg_reclaim_begin/end` fire around
//! `try_to_free_mem_cgroup_pages` in the context of the task that asked for
//! the reclaim. The records carry no memcg, so a run is attributed to the
//! current task's cgroup: the charging task's own cgroup, while the memcg
//! reclaimed is the one over its limit, which can be an ancestor (a parent's
//! `memory.high` hit by a child's task is reported under the child). Reclaim
//! started by writing `memory.high`/`memory.max`/`memory.reclaim` runs in the
//! writer and is attributed to the writer's cgroup.
//!
//! `nr_reclaimed` summed over a cgroup's runs and that cgroup's `memory.stat`
//! `pgsteal` delta are reported side by side and never equated: they count
//! different things. `pgsteal` counts the pages taken off this cgroup's LRU
//! lists by every reclaimer: kswapd and global direct reclaim (which the memcg
//! tracepoints do not see), proactive `memory.reclaim`, and reclaim of an
//! ancestor over its limit run by a task of another cgroup (attributed to that
//! task's cgroup here). A run's `nr_reclaimed` is what that one call freed
//! across the whole subtree it reclaimed (children included), plus, on some
//! kernels, slab pages freed by the shrinkers it ran. In the VM tests (one
//! task, one leaf, no swap) they came out equal; under other loads the
//! measured gap was tenfold (`shared/ENVIRONMENT.md`).
//!
//! Where the reclaim tracepoints cannot be attached (or with `--memcg-reclaim
//! stat`), reclaim is reported from `memory.stat` deltas instead
//! (`super::reclaim_stat`); the tracepoints stay attached when they can, for
//! the `vmscan` throttle mechanism, but send no `memcg.reclaim` then.

use std::{collections::HashMap, path::PathBuf};

use aya::{
    Btf as AyaBtf, Ebpf,
    maps::{MapData, PerCpuHashMap},
    programs::{FEntry, FExit, KProbe, TracePoint},
};
use observer_common::{
    OFFSET_UNKNOWN,
    memcg::{MemcgConfig, MemcgReclaimEvent, MemcgThrottleEvent, NR_PAGES_UNKNOWN, PAGES_UNKNOWN, THROTTLE_FENTRY},
};

use super::{Reclaim, Throttle};
use crate::{
    cgroup::CgroupPaths,
    event::{Attribution, CgroupSource, Event, MemcgLimits, MemcgReclaim, MemcgThrottle, MemcgThrottleIdle},
    kernel::{btf::Btf, features::chain, tracefs::Format},
};

const FUNCTION: &str = "mem_cgroup_handle_over_high";

/// The load-time settings of the memcg programs for this kernel.
pub fn config(btf: Option<&Btf>, tracefs: &std::path::Path) -> MemcgConfig {
    let task_nr_pages_over_high =
        btf.and_then(|b| b.member_offset("task_struct", &["memcg_nr_pages_over_high"]).ok()).unwrap_or(OFFSET_UNKNOWN);
    let reclaim_end_nr_reclaimed = Format::read(tracefs, "vmscan", "mm_vmscan_memcg_reclaim_end")
        .ok()
        .and_then(|f| f.field("nr_reclaimed").filter(|f| f.size == 8).map(|f| f.offset as u32))
        .unwrap_or(OFFSET_UNKNOWN);
    let offset = |ty: &str, path: &[&str]| btf.and_then(|b| b.member_offset(ty, path).ok());
    let memcg_id = btf
        .and_then(|b| b.enum_values("cgroup_subsys_id").ok())
        .and_then(|values| values.iter().find(|(name, _)| name == "memory_cgrp_id").map(|(_, v)| *v))
        .and_then(|v| u32::try_from(v).ok());
    let css_set_memcg = offset("css_set", &["subsys"]).zip(memcg_id).map(|(subsys, id)| subsys + 8 * id);
    let counter =
        |field: &str| offset("mem_cgroup", &["memory"]).zip(offset("page_counter", &[field])).map(|(a, b)| a + b);
    let known = |o: Option<u32>| o.unwrap_or(OFFSET_UNKNOWN);
    MemcgConfig {
        task_nr_pages_over_high,
        reclaim_end_nr_reclaimed,
        task_cgroups: known(offset("task_struct", &["cgroups"])),
        css_set_memcg: known(css_set_memcg),
        memcg_usage: known(counter("usage")),
        memcg_high: known(counter("high")),
        memcg_max: known(counter("max")),
        _pad: 0,
    }
}

/// The kernel's page counts as bytes (`memory.current`, `.high`, `.max`);
/// the largest count (`PAGE_COUNTER_MAX`) is no limit, like `max` in the file.
fn counted_limits(ev: &MemcgThrottleEvent) -> MemcgLimits {
    const PAGE: u64 = 4096;
    const PAGE_COUNTER_MAX: u64 = i64::MAX as u64 / PAGE;
    let bytes = |pages: u64| (pages < PAGE_COUNTER_MAX).then(|| pages * PAGE);
    MemcgLimits {
        memory_current: (ev.usage_pages != PAGES_UNKNOWN).then(|| ev.usage_pages * PAGE),
        // PAGES_UNKNOWN is past PAGE_COUNTER_MAX too.
        memory_high: bytes(ev.high_pages),
        memory_max: bytes(ev.max_pages),
    }
}

/// The attached throttle and reclaim programs.
pub struct KernelMemcg {
    root: PathBuf,
    /// The throttle mechanism in use, or why none.
    pub throttle: Result<Throttle, String>,
    /// The reclaim tracepoints are attached, or why not.
    pub reclaim: Result<(), String>,
    /// The reclaim mechanism in use (`Tracepoint` or `Stat`), or why none.
    pub reclaim_via: Result<Reclaim, String>,
    idle: Option<PerCpuHashMap<MapData, u64, u64>>,
    /// Idle entries reported so far, per cgroup id.
    idle_seen: HashMap<u64, u64>,
}

impl KernelMemcg {
    /// Attaches what `wanted` asks for: `Auto` takes the first of fentry,
    /// kprobe, vmscan that loads and attaches; a forced one is used or none.
    /// Reclaim: `Auto` takes the tracepoints, else `memory.stat`.
    pub fn attach(ebpf: &mut Ebpf, root: PathBuf, wanted: Throttle, reclaim_wanted: Reclaim) -> Self {
        let reclaim = attach_reclaim(ebpf);
        let reclaim_via = match (reclaim_wanted, &reclaim) {
            (Reclaim::Stat, _) | (Reclaim::Auto, Err(_)) => Ok(Reclaim::Stat),
            (_, Ok(())) => Ok(Reclaim::Tracepoint),
            (Reclaim::Tracepoint, Err(e)) => Err(e.clone()),
        };
        let mut reasons = Vec::new();
        let order: &[Throttle] = match wanted {
            Throttle::Auto => &[Throttle::Fentry, Throttle::Kprobe, Throttle::Vmscan],
            Throttle::Fentry => &[Throttle::Fentry],
            Throttle::Kprobe => &[Throttle::Kprobe],
            Throttle::Vmscan => &[Throttle::Vmscan],
        };
        let mut throttle = None;
        for &m in order {
            let outcome = match m {
                Throttle::Fentry => attach_fentry(ebpf),
                Throttle::Kprobe => attach_kprobe(ebpf),
                _ => reclaim.clone().map_err(|e| format!("the reclaim tracepoints: {e}")),
            };
            match outcome {
                Ok(()) => {
                    throttle = Some(m);
                    break;
                }
                Err(e) => reasons.push(format!("{}: {e}", m.name())),
            }
        }
        let idle = match throttle {
            Some(Throttle::Fentry | Throttle::Kprobe) => {
                ebpf.take_map("OVER_HIGH_IDLE").and_then(|m| PerCpuHashMap::try_from(m).ok())
            }
            _ => None,
        };
        Self {
            root,
            throttle: throttle.ok_or_else(|| reasons.join("; ")),
            reclaim,
            reclaim_via,
            idle,
            idle_seen: HashMap::new(),
        }
    }

    /// For the ready line.
    pub fn describe(&self) -> String {
        let throttle = match &self.throttle {
            Ok(Throttle::Vmscan) => "vmscan (inferred)".to_string(),
            Ok(m) => m.name().to_string(),
            Err(e) => format!("unavailable ({e})"),
        };
        let reclaim = match (&self.reclaim_via, &self.reclaim) {
            (Ok(Reclaim::Stat), Err(e)) => format!("memory.stat deltas (vmscan tracepoints: {e})"),
            (Ok(Reclaim::Stat), Ok(())) => "memory.stat deltas (forced)".to_string(),
            (Ok(_), _) => "vmscan tracepoints".to_string(),
            (Err(e), _) => format!("unavailable ({e})"),
        };
        format!("throttle: {throttle}; reclaim: {reclaim}")
    }

    pub fn throttle_event(&self, ev: &MemcgThrottleEvent, cgroups: &mut CgroupPaths) -> Event {
        let who = self.task(ev.cgroup_id, ev.pid, &ev.comm, cgroups);
        Event::MemcgThrottle(MemcgThrottle {
            mechanism: if ev.mechanism == THROTTLE_FENTRY { "fentry" } else { "kprobe" },
            inferred: false,
            duration_ns: Some(ev.header.ts_ns.saturating_sub(ev.start_ns)),
            nr_pages: (ev.nr_pages != NR_PAGES_UNKNOWN).then_some(ev.nr_pages),
            // As the kernel had them when the throttle began; the files, read
            // now, where the program could not read them.
            limits: if ev.high_pages != PAGES_UNKNOWN {
                counted_limits(ev)
            } else {
                self.limits(who.cgroup_path.as_deref())
            },
            who,
        })
    }

    /// The reclaim event, and with the `vmscan` mechanism the throttle it implies.
    pub fn reclaim_events(&self, ev: &MemcgReclaimEvent, cgroups: &mut CgroupPaths) -> Vec<Event> {
        let who = self.task(ev.cgroup_id, ev.pid, &ev.comm, cgroups);
        let limits = self.limits(who.cgroup_path.as_deref());
        let duration_ns = (ev.start_ns != 0).then(|| ev.header.ts_ns.saturating_sub(ev.start_ns));
        let mut out = Vec::with_capacity(2);
        if self.throttle == Ok(Throttle::Vmscan) {
            out.push(Event::MemcgThrottle(MemcgThrottle {
                mechanism: "vmscan",
                inferred: true,
                duration_ns,
                nr_pages: None,
                limits,
                who: who.clone(),
            }));
        }
        if self.reclaim_via == Ok(Reclaim::Tracepoint) {
            out.push(Event::MemcgReclaim(MemcgReclaim { duration_ns, nr_reclaimed: ev.nr_reclaimed, limits, who }));
        }
        out
    }

    /// Idle entries that rose since the last call, for cgroups that had a
    /// throttle event or an idle summary before (`active`), or all with `all`.
    pub fn idle_summaries(&mut self, cgroups: &mut CgroupPaths, all: bool) -> Vec<Event> {
        let Some(map) = &self.idle else { return Vec::new() };
        let mechanism = self.throttle.as_ref().map_or("?", |m| m.name());
        let mut out = Vec::new();
        for item in map.iter().flatten() {
            let (id, per_cpu) = item;
            let total: u64 = per_cpu.iter().sum();
            let seen = self.idle_seen.get(&id).copied();
            if !all && seen.is_none() || seen == Some(total) {
                continue;
            }
            self.idle_seen.insert(id, total);
            out.push(Event::MemcgThrottleIdle(MemcgThrottleIdle {
                mechanism,
                count: total - seen.unwrap_or(0).min(total),
                total,
                who: cgroups.attribute(Some(id), CgroupSource::Process),
            }));
        }
        out
    }

    /// Marks a cgroup whose idle entries the periodic summaries report.
    pub fn watch_idle(&mut self, cgroup_id: u64) {
        self.idle_seen.entry(cgroup_id).or_insert(0);
    }

    fn task(&self, cgroup_id: u64, pid: u32, comm: &[u8], cgroups: &mut CgroupPaths) -> Attribution {
        let id = (cgroup_id != 0).then_some(cgroup_id);
        let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        Attribution {
            pid: Some(pid),
            comm: Some(String::from_utf8_lossy(&comm[..end]).into_owned()),
            ..cgroups.attribute(id, CgroupSource::Process)
        }
    }

    fn limits(&self, path: Option<&str>) -> MemcgLimits {
        path.map(|p| limits(&self.root.join(p.trim_start_matches('/')))).unwrap_or_default()
    }
}

/// `memory.current`, `memory.high`, `memory.max` of the cgroup at `dir`, now.
impl crate::sources::Source for KernelMemcg {
    fn kinds(&self) -> &'static [observer_common::EventKind] {
        &[observer_common::EventKind::MemcgThrottle, observer_common::EventKind::MemcgReclaim]
    }

    fn decode(
        &mut self,
        kind: observer_common::EventKind,
        bytes: &[u8],
        cx: &mut crate::sources::Context<'_>,
        out: &mut Vec<crate::event::Record>,
    ) {
        use crate::sources::read;
        if kind == observer_common::EventKind::MemcgThrottle {
            let Some(raw) = read::<MemcgThrottleEvent>(bytes) else { return };
            self.watch_idle(raw.cgroup_id);
            let event = self.throttle_event(&raw, cx.cgroups);
            out.push(cx.record(raw.header.ts_ns, event));
        } else {
            let Some(raw) = read::<MemcgReclaimEvent>(bytes) else { return };
            for event in self.reclaim_events(&raw, cx.cgroups) {
                out.push(cx.record(raw.header.ts_ns, event));
            }
        }
    }

    fn tick(&mut self, cx: &mut crate::sources::Context<'_>, _last: bool, out: &mut Vec<crate::event::Record>) {
        for event in self.idle_summaries(cx.cgroups, false) {
            out.push(cx.record_now(event));
        }
    }

    /// Said with the `memory.events` watcher's part (`attach::memcg_sources`).
    fn ready(&self) -> String {
        String::new()
    }
}

pub fn limits(dir: &std::path::Path) -> MemcgLimits {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok()?.trim().parse().ok();
    MemcgLimits {
        memory_current: read("memory.current"),
        memory_high: read("memory.high"),
        memory_max: read("memory.max"),
    }
}

fn attach_reclaim(ebpf: &mut Ebpf) -> Result<(), String> {
    for (program, name) in
        [("memcg_reclaim_begin", "mm_vmscan_memcg_reclaim_begin"), ("memcg_reclaim_end", "mm_vmscan_memcg_reclaim_end")]
    {
        let p: &mut TracePoint = crate::kernel::features::program(ebpf, program)?;
        p.load().map_err(|e| chain(&e))?;
        p.attach("vmscan", name).map_err(|e| format!("vmscan:{name}: {}", chain(&e)))?;
    }
    Ok(())
}

fn attach_fentry(ebpf: &mut Ebpf) -> Result<(), String> {
    let btf = AyaBtf::from_sys_fs().map_err(|e| chain(&e))?;
    let entry: &mut FEntry = crate::kernel::features::program(ebpf, "memcg_over_high_fentry")?;
    entry.load(FUNCTION, &btf).map_err(|e| chain(&e))?;
    entry.attach().map_err(|e| chain(&e))?;
    let exit = (|| {
        let exit: &mut FExit = crate::kernel::features::program(ebpf, "memcg_over_high_fexit")?;
        exit.load(FUNCTION, &btf).map_err(|e| chain(&e))?;
        exit.attach().map_err(|e| chain(&e)).map(|_| ())
    })();
    if let Err(e) = exit {
        // An entry without its exit would only fill the start map.
        if let Ok(entry) = crate::kernel::features::program::<FEntry>(ebpf, "memcg_over_high_fentry") {
            let _ = entry.unload();
        }
        return Err(format!("fexit: {e}"));
    }
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf) -> Result<(), String> {
    let entry: &mut KProbe = crate::kernel::features::program(ebpf, "memcg_over_high_kprobe")?;
    entry.load().map_err(|e| chain(&e))?;
    entry.attach(FUNCTION, 0).map_err(|e| chain(&e))?;
    let exit = (|| {
        let exit: &mut KProbe = crate::kernel::features::program(ebpf, "memcg_over_high_kretprobe")?;
        exit.load().map_err(|e| chain(&e))?;
        exit.attach(FUNCTION, 0).map_err(|e| chain(&e)).map(|_| ())
    })();
    if let Err(e) = exit {
        if let Ok(entry) = crate::kernel::features::program::<KProbe>(ebpf, "memcg_over_high_kprobe") {
            let _ = entry.unload();
        }
        return Err(format!("kretprobe: {e}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(usage_pages: u64, high_pages: u64, max_pages: u64) -> MemcgThrottleEvent {
        MemcgThrottleEvent {
            header: observer_common::EventHeader { kind: 0, cpu: 0, ts_ns: 0 },
            cgroup_id: 0,
            start_ns: 0,
            nr_pages: 0,
            pid: 0,
            tid: 0,
            comm: [0; 16],
            mechanism: THROTTLE_FENTRY,
            _pad: 0,
            usage_pages,
            high_pages,
            max_pages,
        }
    }

    #[test]
    fn page_counts_become_bytes_and_the_largest_no_limit() {
        let no_limit = i64::MAX as u64 / 4096;
        let l = counted_limits(&throttle(2000, 1536, no_limit));
        assert_eq!((l.memory_current, l.memory_high, l.memory_max), (Some(2000 * 4096), Some(6 << 20), None));
        let l = counted_limits(&throttle(PAGES_UNKNOWN, 8192, PAGES_UNKNOWN));
        assert_eq!((l.memory_current, l.memory_high, l.memory_max), (None, Some(32 << 20), None));
    }
}
