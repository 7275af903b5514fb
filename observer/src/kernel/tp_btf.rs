//! BTF tracepoints (`tp_btf`) first, the classic tracepoint where this
//! kernel cannot have them. A classic tracepoint program is skipped
//! silently while another BPF program runs on its CPU (measured on 6.1: one
//! retransmit in 217 lost, no counter); a `tp_btf` program's skips are
//! counted in its `recursion_misses` (`kernel::misses`), so no loss goes
//! uncounted.

use aya::{
    Ebpf,
    programs::{BtfTracePoint, TracePoint},
};
use observer_common::tp_btf::{ARG_ABSENT, TpBtfArgs};

use super::{btf::Btf, features::chain};

/// Set to 1, the agent uses the classic tracepoints only (for tests that
/// check the fallback on a kernel that has `tp_btf`).
pub const FORCE_CLASSIC_ENV: &str = "OBSERVER_CLASSIC_TRACEPOINTS";

pub fn classic_forced() -> bool {
    std::env::var_os(FORCE_CLASSIC_ENV).is_some_and(|v| v == "1")
}

/// The index of each argument the programs know, picked by its type from
/// the tracepoint's prototype (the names are not in BTF). A `struct sock *`
/// is `sk` (`kfree_skb`'s one is its `rx_sk`: the caller moves it).
pub fn arguments(types: &[String]) -> TpBtfArgs {
    let find = |want: &dyn Fn(&str) -> bool| types.iter().position(|t| want(t)).map_or(ARG_ABSENT, |i| i as u32);
    TpBtfArgs {
        sk: find(&|t| t == "struct sock *"),
        skb: find(&|t| t == "struct sk_buff *"),
        location: find(&|t| t == "void *"),
        reason: find(&|t| t.starts_with("enum ")),
        rx_sk: ARG_ABSENT,
        err: find(&|t| t == "int"),
    }
}

/// Whether an argument is at `index` (the program reads each at a fixed
/// index: arguments are only ever appended) or, if `optional`, absent.
pub fn at(found: u32, index: u32, optional: bool) -> bool {
    found == index || (optional && found == ARG_ABSENT)
}

/// The arguments of `tracepoint` on this kernel, or why its `tp_btf`
/// program cannot be used (no BTF, no prototype, or a needed argument
/// missing, as `usable` decides).
pub fn args(btf: Option<&Btf>, tracepoint: &str, usable: fn(&TpBtfArgs) -> bool) -> Result<TpBtfArgs, String> {
    let btf = btf.ok_or("no kernel BTF")?;
    let types = btf.tracepoint_args(tracepoint).map_err(|e| e.to_string())?;
    let args = arguments(&types);
    if !usable(&args) {
        return Err(format!("{tracepoint}'s arguments ({}) are not where the program reads them", types.join(", ")));
    }
    Ok(args)
}

/// One tracepoint's two programs.
pub struct Programs<'a> {
    /// `tp_btf` program, and the classic one, in the object.
    pub btf: &'a str,
    pub classic: &'a str,
    pub category: &'a str,
    pub name: &'a str,
}

/// Attaches the `tp_btf` program where it loads and attaches, else the
/// classic one; says which ("tp_btf tcp:tcp_send_reset", or "tracepoint
/// tcp:tcp_send_reset (tp_btf: why not)"). `args` is [`args`]'s answer.
pub fn attach(
    ebpf: &mut Ebpf,
    kernel_btf: Option<&aya::Btf>,
    args: &Result<TpBtfArgs, String>,
    p: &Programs<'_>,
) -> Result<String, String> {
    let why_not = match (classic_forced(), args, kernel_btf) {
        (true, ..) => format!("{FORCE_CLASSIC_ENV}=1"),
        (_, Err(why), _) => why.clone(),
        (_, Ok(_), None) => "no kernel BTF".into(),
        (_, Ok(_), Some(btf)) => match attach_btf(ebpf, btf, p) {
            Ok(()) => return Ok(format!("tp_btf {}:{}", p.category, p.name)),
            Err(why) => {
                tracing::debug!("tp_btf {}: {why}", p.name);
                // The verifier's log is for the debug line, not the verdict.
                why.split(" Verifier output:").next().unwrap_or_default().to_string()
            }
        },
    };
    let mut classic = || -> Result<(), String> {
        let program: &mut TracePoint = ebpf
            .program_mut(p.classic)
            .ok_or_else(|| format!("program {} missing from the eBPF object", p.classic))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain(&e))?;
        program.load().map_err(|e| chain(&e))?;
        program.attach(p.category, p.name).map_err(|e| chain(&e))?;
        Ok(())
    };
    classic().map_err(|e| format!("{e} (tp_btf: {why_not})"))?;
    Ok(format!("tracepoint {}:{} (tp_btf: {why_not})", p.category, p.name))
}

fn attach_btf(ebpf: &mut Ebpf, btf: &aya::Btf, p: &Programs<'_>) -> Result<(), String> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(p.btf)
        .ok_or_else(|| format!("program {} missing from the eBPF object", p.btf))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| chain(&e))?;
    program.load(p.name, btf).map_err(|e| chain(&e))?;
    if let Err(e) = program.attach() {
        // Unloaded, so its (unused) counters are not reported as ours.
        let _ = program.unload();
        return Err(chain(&e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_are_found_by_type_on_each_kernels_prototype() {
        // tcp_send_reset before 6.10, and from 6.10 (with its reason).
        let a = arguments(&types(&["struct sock *", "struct sk_buff *"]));
        assert_eq!((a.sk, a.skb, a.reason), (0, 1, ARG_ABSENT));
        let a = arguments(&types(&["struct sock *", "struct sk_buff *", "enum sk_rst_reason"]));
        assert_eq!((a.sk, a.skb, a.reason), (0, 1, 2));
        // kfree_skb on 6.1, and from 6.11 (rx_sk last).
        let a = arguments(&types(&["struct sk_buff *", "void *", "enum skb_drop_reason"]));
        assert_eq!((a.skb, a.location, a.reason, a.sk), (0, 1, 2, ARG_ABSENT));
        let a = arguments(&types(&["struct sk_buff *", "void *", "enum skb_drop_reason", "struct sock *"]));
        assert_eq!((a.skb, a.location, a.reason, a.sk), (0, 1, 2, 3));
        // tcp_retransmit_skb before and from 6.13.
        assert_eq!(arguments(&types(&["struct sock *", "struct sk_buff *"])).err, ARG_ABSENT);
        assert_eq!(arguments(&types(&["struct sock *", "struct sk_buff *", "int"])).err, 2);
    }

    #[test]
    fn a_prototype_without_a_needed_argument_is_refused() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("SKIPPED: no kernel BTF on this machine");
            return;
        };
        let err = args(Some(&btf), "tcp_receive_reset", |a| at(a.skb, 1, false)).unwrap_err();
        assert!(err.contains("struct sock *"), "{err}");
        assert!(args(Some(&btf), "tcp_receive_reset", |a| at(a.sk, 0, false)).is_ok());
        assert!(!at(ARG_ABSENT, 2, false) && at(ARG_ABSENT, 2, true) && !at(1, 2, true));
        assert!(args(None, "tcp_receive_reset", |_| true).is_err());
    }
}
