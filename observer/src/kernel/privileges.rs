//! The capabilities the agent uses, what each one is for, and which are
//! missing: one table ([`NEEDED`]) behind the start-up check, `observer
//! check`'s CAPABILITIES section, `observer check --capabilities` (which the
//! Helm chart's list is tested against) and the README.
//!
//! Measured on Linux 6.18 as root with only these in the bounding set
//! (`setpriv`), removing one at a time (tests/tests/least_privilege.rs):
//! - without CAP_BPF and CAP_PERFMON nothing loads, unless CAP_SYS_ADMIN is
//!   there, which the kernel accepts in place of either;
//! - uprobes need CAP_SYS_ADMIN: since upstream commit ba677dbe77af ("perf:
//!   Revert to requiring CAP_SYS_ADMIN for uprobes", 2025; backported to the
//!   stable kernels) perf's uprobe PMU refuses CAP_PERFMON, because a uprobe
//!   placed mid-instruction corrupts the traced program. No other
//!   capability stands in (each of the other 40 tried). fentry programs
//!   (memcg.throttle's first choice; kprobes follow) do not load without
//!   it either;
//! - without CAP_SYS_PTRACE a Go process of another user is never attached
//!   (its /proc/PID/exe, environ and maps are closed to us);
//! - without CAP_DAC_READ_SEARCH a Go executable only its owner may read
//!   (mode 0700) cannot be parsed, so that process is not attached;
//! - without CAP_SYSLOG /proc/kallsyms hides kernel addresses, so drop
//!   locations stay numeric;
//! - kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK, which only
//!   CAP_SYS_RESOURCE may raise.

use std::fmt::Write as _;

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// One capability the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub cap: u32,
    /// `CAP_BPF`.
    pub name: &'static str,
    /// The signals that need it (names of `sources::signals::ALL`).
    pub signals: &'static str,
    /// What it allows us, in a few words.
    pub why: &'static str,
    /// Also granted by CAP_SYS_ADMIN.
    pub implied_by_sys_admin: bool,
}

pub const NEEDED: &[Need] = &[
    Need {
        cap: CAP_BPF,
        name: "CAP_BPF",
        signals: "all",
        why: "load the eBPF programs and create their maps",
        implied_by_sys_admin: true,
    },
    Need {
        cap: CAP_PERFMON,
        name: "CAP_PERFMON",
        signals: "all",
        why: "attach tracepoints, kprobes and fentry programs",
        implied_by_sys_admin: true,
    },
    Need {
        cap: CAP_SYS_ADMIN,
        name: "CAP_SYS_ADMIN",
        signals: "go.gc,go.assist,go.heap,memcg.throttle",
        why: "create uprobes (Linux grants them to CAP_SYS_ADMIN only) and load fentry programs (refused without it on 6.18)",
        implied_by_sys_admin: false,
    },
    Need {
        cap: CAP_SYS_PTRACE,
        name: "CAP_SYS_PTRACE",
        signals: "go.processes,go.gc,go.assist,go.heap",
        why: "read /proc/PID/exe, environ and maps of other users' processes",
        implied_by_sys_admin: false,
    },
    Need {
        cap: CAP_DAC_READ_SEARCH,
        name: "CAP_DAC_READ_SEARCH",
        signals: "go.processes,go.gc,go.assist,go.heap",
        why: "read Go executables that only their owner may read",
        implied_by_sys_admin: false,
    },
    Need {
        cap: CAP_SYSLOG,
        name: "CAP_SYSLOG",
        signals: "net.drop",
        why: "read kernel addresses in /proc/kallsyms, to name drop locations",
        implied_by_sys_admin: false,
    },
    Need {
        cap: CAP_SYS_RESOURCE,
        name: "CAP_SYS_RESOURCE",
        signals: "all",
        why: "raise RLIMIT_MEMLOCK on kernels before 5.11, which charge BPF memory to it",
        implied_by_sys_admin: false,
    },
];

#[derive(Debug, thiserror::Error)]
#[error(
    "observer needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); missing: {missing}. Run it as root (`sudo observer ...`) or grant those capabilities (`observer check --capabilities` lists all it uses)"
)]
pub struct MissingCapabilities {
    pub missing: String,
}

/// The effective capability set of this process, from /proc/self/status.
fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Whether anything can load at all.
pub fn check() -> Result<(), MissingCapabilities> {
    check_set(effective())
}

fn check_set(caps: u64) -> Result<(), MissingCapabilities> {
    if has(caps, CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> =
        NEEDED.iter().filter(|n| n.implied_by_sys_admin && !has(caps, n.cap)).map(|n| n.name).collect();
    if missing.is_empty() { Ok(()) } else { Err(MissingCapabilities { missing: missing.join(", ") }) }
}

/// Whether this process may create uprobes (the Go signals), or why not.
pub fn uprobes_allowed() -> Result<(), String> {
    match has(effective(), CAP_SYS_ADMIN) {
        true => Ok(()),
        false => Err("no CAP_SYS_ADMIN: Linux creates uprobes for CAP_SYS_ADMIN only".into()),
    }
}

/// One line per missing capability: its name, what it costs, and whether
/// CAP_SYS_ADMIN stands in for it. Empty when every one is there.
pub fn missing_lines() -> Vec<String> {
    missing_in(effective())
}

fn missing_in(caps: u64) -> Vec<String> {
    NEEDED
        .iter()
        .filter(|n| !has(caps, n.cap))
        .map(|n| {
            let covered = if n.implied_by_sys_admin && has(caps, CAP_SYS_ADMIN) {
                " (CAP_SYS_ADMIN stands in for it here)"
            } else {
                ""
            };
            format!("{} missing ({}): cannot {}{covered}", n.name, signals_phrase(n.signals), n.why)
        })
        .collect()
}

fn signals_phrase(signals: &str) -> String {
    match signals.strip_prefix("all") {
        Some(rest) => format!("every signal{rest}"),
        None => signals.replace(',', ", "),
    }
}

/// `observer check`'s CAPABILITIES section.
pub fn table() -> String {
    let caps = effective();
    let mut out = String::from("\nCAPABILITIES\n");
    for n in NEEDED {
        let verdict = match (has(caps, n.cap), n.implied_by_sys_admin && has(caps, CAP_SYS_ADMIN)) {
            (true, _) => "present",
            (false, true) => "missing (CAP_SYS_ADMIN stands in)",
            (false, false) => "MISSING",
        };
        let _ = writeln!(out, "  {:<20} {:<34} {}: {}", n.name, verdict, n.signals, n.why);
    }
    out
}

/// `observer check --capabilities`: `NAME signals` per line, for scripts
/// and the chart's test.
pub fn list() -> String {
    NEEDED.iter().map(|n| format!("{} {}\n", n.name, n.signals)).collect()
}

/// Lifts RLIMIT_MEMLOCK for kernels that still charge BPF memory to it (before
/// 5.11); newer kernels charge the memory cgroup, so failing here is harmless.
pub fn raise_memlock() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid, initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(caps: &[u32]) -> u64 {
        caps.iter().fold(0, |s, c| s | 1 << c)
    }

    #[test]
    fn sys_admin_alone_is_enough_to_load() {
        assert!(check_set(set(&[CAP_SYS_ADMIN])).is_ok());
    }

    #[test]
    fn bpf_and_perfmon_are_enough_to_load() {
        assert!(check_set(set(&[CAP_BPF, CAP_PERFMON])).is_ok());
    }

    #[test]
    fn names_each_capability_loading_lacks() {
        assert_eq!(check_set(0).unwrap_err().missing, "CAP_BPF, CAP_PERFMON");
        assert_eq!(check_set(set(&[CAP_BPF])).unwrap_err().missing, "CAP_PERFMON");
    }

    #[test]
    fn every_missing_capability_gets_one_line_naming_what_it_costs() {
        let all = set(&NEEDED.iter().map(|n| n.cap).collect::<Vec<_>>());
        assert!(missing_in(all).is_empty());
        let lines = missing_in(all & !(1 << CAP_SYS_PTRACE));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("CAP_SYS_PTRACE missing (go.processes, go.gc, go.assist, go.heap): cannot read"),
            "{lines:?}"
        );
        let lines = missing_in(all & !(1 << CAP_BPF));
        assert!(lines[0].ends_with("(CAP_SYS_ADMIN stands in for it here)"), "{lines:?}");
        let lines = missing_in(all & !(1 << CAP_SYS_RESOURCE));
        assert!(
            lines[0].starts_with(
                "CAP_SYS_RESOURCE missing (every signal): cannot raise RLIMIT_MEMLOCK on kernels before 5.11"
            ),
            "{lines:?}"
        );
    }

    #[test]
    fn the_list_has_one_line_per_capability() {
        let list = list();
        assert_eq!(list.lines().count(), NEEDED.len());
        assert!(list.lines().all(|l| l.starts_with("CAP_") && l.split(' ').count() == 2), "{list}");
    }
}
