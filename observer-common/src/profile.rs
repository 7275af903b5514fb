//! CPU samples counted in the kernel: one count per (process, cgroup, user
//! stack, kernel stack), read and cleared by the agent once per slice. Two
//! sets of maps, chosen by `PROFILE_SLOT`, so the agent drains one while the
//! program fills the other.

/// A stack the program could not record (the stack map was full, or the
/// slot held another stack), or a sample with no kernel part.
pub const NO_STACK: i32 = -1;

/// Key of `CPU_COUNTS_0`/`_1`.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// The cgroup the sampled thread ran in (v2 id).
    pub cgroup_id: u64,
    pub tgid: u32,
    /// Ids in the slot's stack map, or [`NO_STACK`].
    pub user_stack: i32,
    pub kernel_stack: i32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<SampleKey>() == 24);

/// Stacks per stack map: a slice's distinct stacks of every watched process
/// (preallocated, about 1 KiB each).
pub const STACKS_PER_SLOT: u32 = 4096;
/// Distinct sample keys per slice (preallocated, 8 bytes per CPU each).
pub const SAMPLE_KEYS_PER_SLOT: u32 = 4096;

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, no padding.
unsafe impl aya::Pod for SampleKey {}
