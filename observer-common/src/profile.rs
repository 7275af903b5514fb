//! CPU samples counted in the kernel: one count per (process, cgroup, user
//! stack, kernel stack), read and cleared by the agent once per slice. Two
//! sets of maps, chosen by `PROFILE_SLOT`, so the agent drains one while the
//! program fills the other.

/// A stack the program could not record (the stack map was full), or a
/// sample with no kernel part.
pub const NO_STACK: u64 = 0;

/// Frames kept per stack (the kernel's default `perf_event_max_stack`).
pub const MAX_FRAMES: usize = 127;

/// One stack in `STACKS_0`/`_1`, keyed by a 64-bit hash of its frames: no
/// two stacks share an entry (the kernel's stack maps keep one stack per
/// hash bucket and drop a colliding one, which lost whole hot stacks once
/// many processes were sampled).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct Stack {
    pub len: u64,
    /// Innermost first; those past `len` are left from earlier stacks.
    pub ips: [u64; MAX_FRAMES],
}

const _: () = assert!(core::mem::size_of::<Stack>() == 1024);

/// Key of `CPU_COUNTS_0`/`_1`.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// The cgroup the sampled thread ran in (v2 id).
    pub cgroup_id: u64,
    /// Keys in the slot's stack map, or [`NO_STACK`].
    pub user_stack: u64,
    pub kernel_stack: u64,
    pub tgid: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<SampleKey>() == 32);

/// Stacks per stack map: a slice's distinct stacks of every watched process
/// (preallocated, 1 KiB each).
pub const STACKS_PER_SLOT: u32 = 4096;
/// Distinct sample keys per slice (preallocated, 8 bytes per CPU each).
pub const SAMPLE_KEYS_PER_SLOT: u32 = 4096;

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, no padding.
unsafe impl aya::Pod for SampleKey {}
#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, no padding.
unsafe impl aya::Pod for Stack {}

/// How an allocation sample was taken (`AllocKey::method`).
pub mod alloc_method {
    /// `runtime.mProf_Malloc`: one of the runtime's own samples (one per
    /// `MemProfileRate` bytes on average), of the allocation's size.
    pub const SAMPLED: u32 = 0;
    /// `runtime.(*mcache).refill`: a new span for a size class, of the
    /// span's bytes (binaries whose memory profiling the linker turned off).
    pub const SPAN_REFILL: u32 = 1;
    /// `runtime.(*mcache).allocLarge`: one allocation over 32 KiB, of its size.
    pub const LARGE: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Key of `ALLOC_COUNTS_0`/`_1`; the stack is in the same slot's stack map
/// as the CPU samples'.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct AllocKey {
    pub cgroup_id: u64,
    pub user_stack: u64,
    pub tgid: u32,
    /// One of [`alloc_method`].
    pub method: u32,
}

const _: () = assert!(core::mem::size_of::<AllocKey>() == 24);

/// Samples and their bytes for one key, per CPU.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocCounts {
    pub samples: u64,
    /// Objects the samples stand for (a span holds many).
    pub objects: u64,
    pub bytes: u64,
    /// `runtime.MemProfileRate` at the last sample (the runtime's own
    /// samples; 0 otherwise or not readable).
    pub rate: u64,
}

/// Span refills are sampled in the kernel: the stack of the refill that
/// brings a process's refilled bytes on one CPU past this is recorded,
/// weighted by all the bytes (and objects) since its last sample there —
/// the runtime's own default `MemProfileRate`; walking a stack is most of a
/// hit's cost, now paid once per 64 refills of 8 KiB spans.
pub const SPAN_SAMPLE_BYTES: u64 = 512 * 1024;

/// Distinct allocation keys per slice.
pub const ALLOC_KEYS_PER_SLOT: u32 = 4096;

/// The Go runtime's small size classes (`SizeClassToSize` and
/// `SizeClassToNPages`, the same in every release from 1.19 to 1.27): a
/// span of class `c` holds `SPAN_BYTES[c]` bytes of objects.
pub const SIZE_CLASSES: usize = 68;
const CLASS_SIZE: [u16; SIZE_CLASSES] = [
    0, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288, 320, 352, 384, 416, 448,
    480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792, 2048, 2304, 2688, 3072, 3200, 3456, 4096,
    4864, 5376, 6144, 6528, 6784, 6912, 8192, 9472, 9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072,
    20480, 21760, 24576, 27264, 28672, 32768,
];
const CLASS_PAGES: [u8; SIZE_CLASSES] = [
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 2,
    1, 2, 1, 3, 2, 3, 1, 3, 2, 3, 4, 5, 6, 1, 7, 6, 5, 4, 3, 5, 7, 2, 9, 7, 5, 8, 3, 10, 7, 4,
];
/// The runtime's page (8 KiB).
const PAGE: u32 = 8192;

/// Objects in one span of each class.
pub const SPAN_OBJECTS: [u32; SIZE_CLASSES] = {
    let mut objects = [0u32; SIZE_CLASSES];
    let mut c = 1;
    while c < SIZE_CLASSES {
        objects[c] = (CLASS_PAGES[c] as u32 * PAGE) / CLASS_SIZE[c] as u32;
        c += 1;
    }
    objects
};

/// Bytes of objects in one span of each class.
pub const SPAN_BYTES: [u32; SIZE_CLASSES] = {
    let mut bytes = [0u32; SIZE_CLASSES];
    let mut c = 1;
    while c < SIZE_CLASSES {
        bytes[c] = SPAN_OBJECTS[c] * CLASS_SIZE[c] as u32;
        c += 1;
    }
    bytes
};

#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, no padding.
unsafe impl aya::Pod for AllocKey {}
#[cfg(feature = "user")]
// SAFETY: plain old data: integers only, no padding.
unsafe impl aya::Pod for AllocCounts {}
