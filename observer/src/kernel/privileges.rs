//! Capabilities the agent needs, checked up front so a missing one gets one
//! clear message instead of an EPERM from deep inside a load.

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
#[error(
    "observer needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); missing: {missing}. Run it as root (`sudo observer ...`) or grant those capabilities"
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

pub fn check() -> Result<(), MissingCapabilities> {
    check_set(effective())
}

fn check_set(caps: u64) -> Result<(), MissingCapabilities> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(MissingCapabilities { missing: missing.join(", ") }) }
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

    #[test]
    fn sys_admin_alone_is_enough() {
        assert!(check_set(1 << CAP_SYS_ADMIN).is_ok());
    }

    #[test]
    fn bpf_and_perfmon_are_enough() {
        assert!(check_set((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_ok());
    }

    #[test]
    fn names_each_missing_capability() {
        assert_eq!(check_set(0).unwrap_err().missing, "CAP_BPF, CAP_PERFMON");
        assert_eq!(check_set(1 << CAP_BPF).unwrap_err().missing, "CAP_PERFMON");
    }
}
