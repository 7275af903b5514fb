//! Runs of our programs the kernel skipped: `bpf_prog_info.recursion_misses`.
//!
//! The kernel does not run a BPF program on a CPU where one is already
//! running (a tracepoint or kprobe hit from inside another program, or from
//! an interrupt that came during one). Every such skip is an event lost
//! without a ring-buffer `lost`; the kernel counts it per program where it
//! can: fentry/fexit from 5.12, raw and BTF tracepoints from 6.2, classic
//! tracepoints and kprobes from 6.7. Before that their count stays at 0
//! even when they miss.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use aya::Ebpf;

/// The loaded programs, by name, and a file descriptor of each that keeps
/// its counters readable after the programs are detached.
pub struct ProgramMisses {
    programs: Vec<(String, OwnedFd)>,
}

impl ProgramMisses {
    /// Every loaded program of `ebpf` (the Go probes are loaded at start and
    /// attached per process, so this is all of them).
    pub fn of(ebpf: &Ebpf) -> Self {
        let programs = ebpf
            .programs()
            .filter_map(|(name, program)| {
                let fd = program.fd().ok()?.as_fd().try_clone_to_owned().ok()?;
                Some((name.to_string(), fd))
            })
            .collect();
        Self { programs }
    }

    /// Per program with at least one miss: its name and count.
    pub fn read(&self) -> Vec<(&str, u64)> {
        self.each().into_iter().filter(|(_, n)| *n > 0).collect()
    }

    /// Every program (whose count could be read), zero or not.
    pub fn each(&self) -> Vec<(&str, u64)> {
        self.programs.iter().filter_map(|(name, fd)| Some((name.as_str(), recursion_misses(fd).ok()?))).collect()
    }

    pub fn total(&self) -> u64 {
        self.read().iter().map(|(_, n)| n).sum()
    }

    /// ` missed=3 (tcp_retransmit=3)` for the stop line.
    pub fn text(&self) -> String {
        let read = self.read();
        if read.is_empty() {
            return " missed=0".into();
        }
        let total: u64 = read.iter().map(|(_, n)| n).sum();
        let each: Vec<String> = read.iter().map(|(name, n)| format!("{name}={n}")).collect();
        format!(" missed={total} ({})", each.join(","))
    }
}

/// `BPF_OBJ_GET_INFO_BY_FD`: aya's `ProgramInfo` does not expose this field.
fn recursion_misses(fd: &OwnedFd) -> std::io::Result<u64> {
    // SAFETY: a plain C struct of integers (and pointers stored as u64), for
    // which all zeroes is the valid "ask for nothing extra" value.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: `attr` points at `info`, which lives across the call and is
    // `info_len` bytes; the kernel writes at most that much into it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>() as libc::c_long,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}
