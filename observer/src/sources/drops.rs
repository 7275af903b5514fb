//! Packet drops (`skb:kfree_skb` with its `reason`).
//!
//! The kernel counts every drop per (netns, reason, flags class) in
//! `DROP_COUNTS`; this module reads that map every second and reports the
//! deltas, and decodes the few individual drop events the program sends
//! within its per-second budget. Reason names come from the running kernel's
//! `enum skb_drop_reason` (values differ between kernels). Kernels before
//! 5.17 give no reason: there the counts are kept per location (the function
//! that freed the packet), and a location that means one reason is named so
//! (`nf_hook_slow` → `NETFILTER_DROP`).

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuHashMap},
};
use observer_common::{
    OFFSET_UNKNOWN,
    net::{
        DropConfig, DropCount, DropKey, FAMILY_IPV4, FAMILY_IPV6, NO_REASON, NetDropEvent, TCP_RST, TCP_SYN, class,
        counter,
    },
    tp_btf::{ARG_ABSENT, TpBtfArgs},
};

use crate::{
    event::NetDropSummary,
    kernel::{
        btf::Btf,
        kallsyms::Kallsyms,
        tp_btf,
        tracefs::{Format, TracefsError},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("skb:kfree_skb has no `{0}` field on this kernel; packet drops are not traced")]
    NoField(&'static str),
    #[error("skb:kfree_skb has no reason field here, and drops are told apart by location, but {0}")]
    NoKallsyms(String),
    #[error("attaching skb:kfree_skb: {0}")]
    Attach(String),
    #[error("map {0} is missing from the embedded eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}: {error}")]
    Map { name: &'static str, error: String },
}

pub struct DropSource {
    config: DropConfig,
    /// The `tp_btf` program's arguments, or why it cannot be used.
    args: Result<TpBtfArgs, String>,
    /// What is attached (`tp_btf` or the classic tracepoint).
    mechanism: String,
    /// Reason value → name without the `SKB_DROP_REASON_` prefix.
    reasons: HashMap<i64, String>,
    /// Loaded on the first event that needs it.
    kallsyms: Option<Result<Kallsyms, String>>,
    maps: Option<DropMaps>,
    /// Last value read per key, to report deltas.
    last: HashMap<DropKey, u64>,
    /// Totals since start per (netns, reason name), for the status line.
    totals: BTreeMap<(u32, String), u64>,
}

struct DropMaps {
    counts: PerCpuHashMap<MapData, DropKey, DropCount>,
    counters: PerCpuArray<MapData, u64>,
}

/// The program's own counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy)]
pub struct DropCounters {
    pub seen: u64,
    pub counted: u64,
    pub events_sent: u64,
    pub events_unsent: u64,
    pub aggregate_full: u64,
    pub retransmits_seen: u64,
}

impl DropSource {
    pub fn prepare(tracefs: &Path, btf: Option<&Btf>, events_per_sec: u32) -> Result<Self, DropError> {
        let format = Format::read(tracefs, "skb", "kfree_skb")?;
        let off = |name: &'static str| format.field(name).map(|f| f.offset as u32).ok_or(DropError::NoField(name));
        let reason_field = format.field("reason");
        let enum_name = reason_field.and_then(|f| f.c_type.strip_prefix("enum ")).unwrap_or("skb_drop_reason");
        let reasons = match reason_field {
            Some(_) => btf.and_then(|b| b.enum_values(enum_name).ok()).map(reason_names).unwrap_or_default(),
            None => HashMap::new(),
        };
        // Without reasons, locations are the only names drops have.
        let kallsyms = match reason_field {
            Some(_) => None,
            None => Some(Ok(Kallsyms::load().map_err(|e| DropError::NoKallsyms(e.to_string()))?)),
        };
        let value_of = |name: &str| {
            reasons
                .iter()
                .find(|(_, n)| n.as_str() == name)
                .and_then(|(v, _)| u32::try_from(*v).ok())
                .unwrap_or(u32::MAX)
        };
        let config = DropConfig {
            skbaddr: off("skbaddr")?,
            location: off("location")?,
            rx_sk: off("rx_sk").unwrap_or(OFFSET_UNKNOWN),
            protocol: off("protocol")?,
            reason: reason_field.map_or(OFFSET_UNKNOWN, |f| f.offset as u32),
            reason_consumed: value_of("CONSUMED"),
            reason_not_specified: if reason_field.is_some() { value_of("NOT_SPECIFIED") } else { NO_REASON },
            events_per_sec,
        };
        let args = tp_btf::args(btf, "kfree_skb", |a| {
            tp_btf::at(a.skb, 0, false)
                && tp_btf::at(a.location, 1, false)
                && tp_btf::at(a.reason, 2, true)
                && tp_btf::at(a.sk, 3, true)
        })
        .and_then(|mut a| {
            // The reasons (or locations) mean the same from either program.
            if (a.reason != ARG_ABSENT) != reason_field.is_some() {
                return Err("its reason argument and the format's reason field disagree".into());
            }
            (a.rx_sk, a.sk) = (a.sk, ARG_ABSENT);
            Ok(a)
        });
        Ok(Self {
            config,
            args,
            mechanism: String::new(),
            reasons,
            kallsyms,
            maps: None,
            last: HashMap::new(),
            totals: BTreeMap::new(),
        })
    }

    pub fn btf_args(&self) -> TpBtfArgs {
        self.args.clone().unwrap_or(TpBtfArgs::ABSENT)
    }

    pub fn config(&self) -> DropConfig {
        self.config
    }

    /// How drops are seen and told apart, for `net.drop`'s verdict.
    pub fn mechanism(&self) -> String {
        if self.config.reason == OFFSET_UNKNOWN {
            format!("{}, no reason field: drops classified by the function that freed them (kallsyms)", self.mechanism)
        } else {
            format!("{} (reason)", self.mechanism)
        }
    }

    /// The program attached, for the ready line.
    pub fn attached(&self) -> &str {
        &self.mechanism
    }

    pub fn attach(&mut self, ebpf: &mut Ebpf, kernel_btf: Option<&aya::Btf>) -> Result<(), DropError> {
        let programs =
            tp_btf::Programs { btf: "kfree_skb_btf", classic: "kfree_skb", category: "skb", name: "kfree_skb" };
        self.mechanism = tp_btf::attach(ebpf, kernel_btf, &self.args, &programs).map_err(DropError::Attach)?;
        let map_err = |name: &'static str| move |e: aya::maps::MapError| DropError::Map { name, error: e.to_string() };
        let counts = PerCpuHashMap::try_from(ebpf.take_map("DROP_COUNTS").ok_or(DropError::MissingMap("DROP_COUNTS"))?)
            .map_err(map_err("DROP_COUNTS"))?;
        let counters =
            PerCpuArray::try_from(ebpf.take_map("NET_COUNTERS").ok_or(DropError::MissingMap("NET_COUNTERS"))?)
                .map_err(map_err("NET_COUNTERS"))?;
        self.maps = Some(DropMaps { counts, counters });
        Ok(())
    }

    /// The reason's name on this kernel (its number when BTF lacks it), or,
    /// on a kernel without reasons, what the location stands for.
    pub fn reason(&mut self, value: u32, location: u64) -> Reason {
        if value == NO_REASON {
            let function = self.location_function(location);
            return Reason {
                name: reason_of_location(function.as_deref()).to_string(),
                code: None,
                source: "location",
            };
        }
        let name = self.reasons.get(&i64::from(value)).cloned().unwrap_or_else(|| value.to_string());
        Reason { name, code: Some(value), source: "kernel" }
    }

    /// `function+0xoff` of a drop location.
    pub fn location(&mut self, addr: u64) -> Option<String> {
        if addr == 0 {
            return None;
        }
        let syms = self.kallsyms.get_or_insert_with(|| {
            Kallsyms::load().map_err(|e| {
                tracing::warn!("{e}");
                e.to_string()
            })
        });
        syms.as_ref().ok()?.resolve(addr)
    }

    /// The function of a location kept as a key (kernels without reasons).
    fn location_function(&mut self, addr: u64) -> Option<String> {
        let at = self.location(addr)?;
        Some(at.split_once('+').map_or(at.as_str(), |(f, _)| f).to_string())
    }

    /// Reads `DROP_COUNTS` and returns what grew since the last call, each
    /// with the kernel time (`bpf_ktime_get_ns`) of its last drop.
    pub fn poll(&mut self) -> Vec<(u64, NetDropSummary)> {
        let Some(maps) = &self.maps else {
            return Vec::new();
        };
        let mut grown = Vec::new();
        for item in maps.counts.iter() {
            let Ok((key, per_cpu)) = item else { continue };
            let value: u64 = per_cpu.iter().map(|c| c.packets).sum();
            let last_ns = per_cpu.iter().map(|c| c.last_ns).max().unwrap_or(0);
            let before = self.last.insert(key, value).unwrap_or(0);
            let delta = value.saturating_sub(before);
            if delta > 0 {
                grown.push((key, delta, value, last_ns));
            }
        }
        let mut out = Vec::new();
        for (key, delta, value, last_ns) in grown {
            let reason = self.reason(key.reason, key.location);
            let location = (key.location != 0).then(|| self.location_function(key.location)).flatten();
            *self.totals.entry((key.netns, reason.name.clone())).or_default() += delta;
            let summary = NetDropSummary {
                netns: key.netns,
                netns_owner: None,
                reason: reason.name,
                reason_code: reason.code,
                reason_source: reason.source,
                location,
                flags_class: class_name(key.class),
                count: delta,
                total: value,
            };
            out.push((last_ns, summary));
        }
        out.sort_by(|(_, a), (_, b)| (a.netns, &a.reason, a.flags_class).cmp(&(b.netns, &b.reason, b.flags_class)));
        out
    }

    pub fn counters(&self) -> DropCounters {
        let Some(maps) = &self.maps else {
            return DropCounters::default();
        };
        let get = |i: u32| maps.counters.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
        DropCounters {
            seen: get(counter::DROP_SEEN),
            counted: get(counter::DROP_COUNTED),
            events_sent: get(counter::DROP_EVENTS_SENT),
            events_unsent: get(counter::DROP_EVENTS_UNSENT),
            aggregate_full: get(counter::DROP_AGGREGATE_FULL),
            retransmits_seen: get(counter::RETRANSMIT_SEEN),
        }
    }

    /// `drops 4026532001:NETFILTER_DROP=10,NO_SOCKET=2 …`: the busiest
    /// namespaces first, at most three, reasons by count.
    pub fn status_text(&self) -> Option<String> {
        if self.totals.is_empty() {
            return None;
        }
        let mut by_ns: BTreeMap<u32, Vec<(&str, u64)>> = BTreeMap::new();
        for ((ns, reason), n) in &self.totals {
            by_ns.entry(*ns).or_default().push((reason, *n));
        }
        // Busiest namespace first: (netns, drops, reasons).
        type NsCounts<'a> = (u32, u64, Vec<(&'a str, u64)>);
        let mut nss: Vec<NsCounts> = by_ns.into_iter().map(|(ns, rs)| (ns, rs.iter().map(|r| r.1).sum(), rs)).collect();
        nss.sort_by_key(|n| std::cmp::Reverse(n.1));
        let mut parts = Vec::new();
        for (ns, _, mut reasons) in nss.iter().take(3).cloned() {
            reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
            let rs: Vec<String> = reasons.iter().take(3).map(|(r, n)| format!("{r}={n}")).collect();
            let more = if reasons.len() > 3 { ",…" } else { "" };
            parts.push(format!("{ns}:{}{more}", rs.join(",")));
        }
        if nss.len() > 3 {
            parts.push(format!("+{} netns", nss.len() - 3));
        }
        Some(format!("drops {}", parts.join(" ")))
    }
}

/// A drop's reason: its name, its value on this kernel, and where it came from.
pub struct Reason {
    pub name: String,
    pub code: Option<u32>,
    /// `kernel` or `location`.
    pub source: &'static str,
}

/// Functions that free a packet for one reason only, named as kernels with
/// reasons name it; any other location is `NOT_SPECIFIED`, as those kernels
/// call most frees.
const LOCATION_REASONS: &[(&str, &str)] =
    &[("nf_hook_slow", "NETFILTER_DROP"), ("sk_filter_trim_cap", "SOCKET_FILTER")];

fn reason_of_location(function: Option<&str>) -> &'static str {
    function
        .and_then(|f| LOCATION_REASONS.iter().find(|(name, _)| *name == f))
        .map_or("NOT_SPECIFIED", |(_, reason)| reason)
}

/// `SKB_DROP_REASON_NETFILTER_DROP` → `NETFILTER_DROP`, `SKB_CONSUMED` →
/// `CONSUMED`, as tracefs prints them.
fn reason_names(values: &[(String, i64)]) -> HashMap<i64, String> {
    values
        .iter()
        .map(|(name, v)| {
            let short = name.strip_prefix("SKB_DROP_REASON_").or_else(|| name.strip_prefix("SKB_")).unwrap_or(name);
            (*v, short.to_string())
        })
        .collect()
}

pub fn class_name(class: u32) -> &'static str {
    match class {
        class::RST => "rst",
        class::SYN => "syn",
        class::OTHER_TCP => "tcp",
        _ => "non_tcp",
    }
}

/// What a drop event's packet headers said.
pub struct PacketInfo {
    pub family: &'static str,
    pub tcp_flags: Option<Vec<&'static str>>,
    pub src: Option<(IpAddr, u16)>,
    pub dst: Option<(IpAddr, u16)>,
}

pub fn packet(ev: &NetDropEvent) -> PacketInfo {
    let addr = |b: &[u8; 16]| -> Option<IpAddr> {
        match ev.family {
            FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(*b))),
            _ => None,
        }
    };
    let tcp = ev.l4_proto == 6;
    let port = |p: u16| if tcp { p } else { 0 };
    PacketInfo {
        family: match ev.family {
            FAMILY_IPV4 => "ipv4",
            FAMILY_IPV6 => "ipv6",
            _ => "other",
        },
        tcp_flags: tcp.then(|| tcp_flag_names(ev.tcp_flags)),
        src: addr(&ev.saddr).map(|a| (a, port(ev.sport))),
        dst: addr(&ev.daddr).map(|a| (a, port(ev.dport))),
    }
}

fn tcp_flag_names(flags: u8) -> Vec<&'static str> {
    const NAMES: [(u8, &str); 8] = [
        (0x01, "FIN"),
        (TCP_SYN, "SYN"),
        (TCP_RST, "RST"),
        (0x08, "PSH"),
        (0x10, "ACK"),
        (0x20, "URG"),
        (0x40, "ECE"),
        (0x80, "CWR"),
    ];
    NAMES.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, n)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_prefixes_are_stripped() {
        let names = reason_names(&[
            ("SKB_NOT_DROPPED_YET".into(), 0),
            ("SKB_CONSUMED".into(), 1),
            ("SKB_DROP_REASON_NOT_SPECIFIED".into(), 2),
            ("SKB_DROP_REASON_NETFILTER_DROP".into(), 12),
        ]);
        assert_eq!(names[&1], "CONSUMED");
        assert_eq!(names[&2], "NOT_SPECIFIED");
        assert_eq!(names[&12], "NETFILTER_DROP");
    }

    #[test]
    fn without_reasons_a_location_names_the_reason_it_stands_for() {
        assert_eq!(reason_of_location(Some("nf_hook_slow")), "NETFILTER_DROP");
        assert_eq!(reason_of_location(Some("tcp_v4_rcv")), "NOT_SPECIFIED");
        assert_eq!(reason_of_location(None), "NOT_SPECIFIED");
    }

    #[test]
    fn flags_are_named() {
        assert_eq!(tcp_flag_names(0x14), vec!["RST", "ACK"]);
        assert_eq!(tcp_flag_names(0x02), vec!["SYN"]);
        assert_eq!(class_name(class::RST), "rst");
        assert_eq!(class_name(99), "non_tcp");
    }

    #[test]
    fn kfree_skb_format_of_this_kernel_is_understood() {
        let Some(tracefs) = crate::kernel::tracefs::find() else {
            eprintln!("SKIPPED: tracefs is not mounted");
            return;
        };
        let btf = Btf::from_sys_fs().ok();
        match DropSource::prepare(&tracefs, btf.as_ref(), 5) {
            Ok(src) => {
                let c = src.config();
                if c.reason == OFFSET_UNKNOWN {
                    assert_eq!(c.reason_not_specified, NO_REASON);
                } else if btf.is_some() {
                    let mut src = src;
                    assert_ne!(c.reason_not_specified, u32::MAX);
                    assert_eq!(src.reason(c.reason_not_specified, 0).name, "NOT_SPECIFIED");
                }
            }
            Err(DropError::NoField(f)) => eprintln!("SKIPPED: kfree_skb has no {f} here"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn decodes_a_dropped_rst() {
        let mut ev = NetDropEvent {
            header: observer_common::EventHeader { kind: 10, cpu: 0, ts_ns: 0 },
            location: 0,
            sk_cgroup_id: 0,
            netns: 1,
            reason: 12,
            protocol: 0x0800,
            family: FAMILY_IPV4,
            l4_proto: 6,
            tcp_flags: TCP_RST,
            sk_full: 0,
            class: class::RST as u8,
            _pad: 0,
            sport: 40000,
            dport: 7100,
            saddr: [0; 16],
            daddr: [0; 16],
            _pad2: 0,
        };
        ev.saddr[..4].copy_from_slice(&[10, 200, 1, 2]);
        ev.daddr[..4].copy_from_slice(&[10, 200, 1, 1]);
        let p = packet(&ev);
        assert_eq!(p.family, "ipv4");
        assert_eq!(p.tcp_flags, Some(vec!["RST"]));
        assert_eq!(p.src, Some(("10.200.1.2".parse().unwrap(), 40000)));
        assert_eq!(p.dst, Some(("10.200.1.1".parse().unwrap(), 7100)));
    }
}
