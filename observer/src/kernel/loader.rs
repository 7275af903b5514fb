//! The embedded eBPF objects, and the one place that loads them.

use aya::{Ebpf, EbpfError, EbpfLoader};
use observer_common::{
    kernel::KernelOffsets,
    memcg::MemcgConfig,
    net::{DropConfig, NetOffsets, RetransmitConfig},
    process::ExecOffsets,
    tcp::ResetTracepointLayout,
    tp_btf::TpBtfArgs,
};

#[cfg(all(observer_ebpf_missing, not(clippy), not(doc)))]
compile_error!(
    "observer's eBPF programs were not built: the eBPF toolchain (bpf-linker, rust-src) is missing; run `cargo xtask setup` (see README)"
);

/// The agent's programs (observer-ebpf's `observer` binary).
pub static OBSERVER_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

/// Tiny programs that `observer check` loads to probe the kernel.
pub static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probes"));

/// Load-time settings of the agent's programs.
pub struct Globals {
    pub offsets: KernelOffsets,
    pub send_reset: ResetTracepointLayout,
    pub receive_reset: ResetTracepointLayout,
    pub net_offsets: NetOffsets,
    pub drop: DropConfig,
    pub retransmit: RetransmitConfig,
    /// The `tp_btf` programs' argument indexes.
    pub send_reset_args: TpBtfArgs,
    pub receive_reset_args: TpBtfArgs,
    pub drop_args: TpBtfArgs,
    pub retransmit_args: TpBtfArgs,
    pub memcg: MemcgConfig,
    /// The kernel has `bpf_get_attach_cookie` (5.15+).
    pub attach_cookies: bool,
    pub exec_offsets: ExecOffsets,
}

pub fn load(globals: &Globals) -> Result<Ebpf, EbpfError> {
    EbpfLoader::new()
        .override_global("KERNEL_OFFSETS", &globals.offsets, true)
        .override_global("SEND_RESET_LAYOUT", &globals.send_reset, true)
        .override_global("RECEIVE_RESET_LAYOUT", &globals.receive_reset, true)
        .override_global("NET_OFFSETS", &globals.net_offsets, true)
        .override_global("DROP_CONFIG", &globals.drop, true)
        .override_global("RETRANSMIT_CONFIG", &globals.retransmit, true)
        .override_global("SEND_RESET_ARGS", &globals.send_reset_args, true)
        .override_global("RECEIVE_RESET_ARGS", &globals.receive_reset_args, true)
        .override_global("DROP_ARGS", &globals.drop_args, true)
        .override_global("RETRANSMIT_ARGS", &globals.retransmit_args, true)
        .override_global("MEMCG_CONFIG", &globals.memcg, true)
        .override_global("GO_ATTACH_COOKIES", &u32::from(globals.attach_cookies), true)
        .override_global("EXEC_OFFSETS", &globals.exec_offsets, true)
        .load(OBSERVER_OBJECT)
}
