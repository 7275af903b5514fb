//! Process lifecycle from the scheduler's tracepoints: a program image
//! replaced (`sched:sched_process_exec`) and a process ended
//! (`sched:sched_process_exit` of its thread-group leader). The agent uses
//! them to find new Go processes at once and to let go of ended ones.

use crate::{EventHeader, OFFSET_UNKNOWN};

/// `ProcessEvent.flags`: the exec program found the new image in `GO_KNOWN`
/// and wrote the process's `GO_PROCS` entry: it is watched from its start.
pub const EXEC_WATCHED: u32 = 1;

/// One exec (kind `ProcessExec`) or one process end (kind `ProcessExit`).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct ProcessEvent {
    /// `header.ts_ns` is when the new image was in place (exec) or when the
    /// leader started to exit.
    pub header: EventHeader,
    /// The process (tgid).
    pub pid: u32,
    /// The thread that ran the tracepoint (the leader for an exit).
    pub tid: u32,
    /// [`EXEC_WATCHED`].
    pub flags: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<ProcessEvent>() == 16 + 4 * 4);

/// Key of `GO_KNOWN`: an executable as the kernel names it.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct BinaryKey {
    /// The file system's `s_dev`, in the kernel's encoding (`MAJOR << 20 | MINOR`).
    pub dev: u64,
    pub ino: u64,
}

impl BinaryKey {
    /// From `stat`'s `st_dev` (glibc's encoding) and `st_ino`.
    pub const fn from_stat(st_dev: u64, ino: u64) -> Self {
        let major = ((st_dev >> 8) & 0xfff) | ((st_dev >> 32) & !0xfff);
        let minor = (st_dev & 0xff) | ((st_dev >> 12) & !0xff);
        BinaryKey { dev: (major << 20) | minor, ino }
    }
}

/// Struct member offsets from BTF by which the exec program finds the new
/// image's file and load address.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct ExecOffsets {
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `mm_struct.exe_file`.
    pub mm_exe_file: u32,
    /// `mm_struct.start_code`.
    pub mm_start_code: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `inode.i_ino` (unsigned long).
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev` (dev_t, u32).
    pub super_block_dev: u32,
    /// `task_struct.signal`.
    pub task_signal: u32,
    /// `signal_struct.live` (atomic_t: the threads not yet past `do_exit`).
    pub signal_live: u32,
    pub _pad: u32,
}

impl ExecOffsets {
    pub const UNKNOWN: Self = Self {
        task_mm: OFFSET_UNKNOWN,
        mm_exe_file: OFFSET_UNKNOWN,
        mm_start_code: OFFSET_UNKNOWN,
        file_inode: OFFSET_UNKNOWN,
        inode_ino: OFFSET_UNKNOWN,
        inode_sb: OFFSET_UNKNOWN,
        super_block_dev: OFFSET_UNKNOWN,
        task_signal: OFFSET_UNKNOWN,
        signal_live: OFFSET_UNKNOWN,
        _pad: 0,
    };
}

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, no padding.
unsafe impl aya::Pod for ProcessEvent {}

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, no padding.
unsafe impl aya::Pod for BinaryKey {}

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, padding is explicit.
unsafe impl aya::Pod for ExecOffsets {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_devices_become_the_kernels_encoding() {
        // 8:1 (sda1), 259:3 (nvme0n1p3), 0:42 (an anonymous device: overlay, tmpfs).
        for (major, minor) in [(8u64, 1u64), (259, 3), (0, 42), (4095, 1 << 19)] {
            let st_dev = ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12);
            assert_eq!(BinaryKey::from_stat(st_dev, 7).dev, (major << 20) | minor, "{major}:{minor}");
        }
    }
}
