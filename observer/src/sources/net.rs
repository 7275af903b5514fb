//! The network signals beyond resets, wired together for the agent: packet
//! drops and retransmits, each named with its namespace's owner (the drop
//! and retransmit hooks run in softirq as often as not, where `current`
//! means nothing).

use std::path::Path;

use aya::Ebpf;
use observer_common::{
    EventKind,
    net::{DropConfig, NetDropEvent, NetOffsets, RetransmitConfig, TcpRetransmitEvent},
    tp_btf::TpBtfArgs,
};

use crate::{
    cgroup::CgroupPaths,
    event::{Attribution, CgroupSource, Event, NetDrop, Record, TcpRetransmit},
    kernel::btf::Btf,
    netns::NetnsOwners,
    sources::{
        Context, Source,
        drops::{self, DropSource},
        read,
        retransmit::RetransmitSource,
        signals::Signals,
    },
};

pub struct NetSources {
    /// Each attached, or why not.
    drops: Result<DropSource, String>,
    retransmits: Result<RetransmitSource, String>,
}

impl NetSources {
    /// Reads the tracepoints' layouts; a signal this kernel lacks is left
    /// out with a warning, the others carry on.
    pub fn prepare(tracefs: &Path, btf: Option<&Btf>, drop_events_per_sec: u32) -> Self {
        let drops = DropSource::prepare(tracefs, btf, drop_events_per_sec).map_err(|e| e.to_string());
        let retransmits = RetransmitSource::prepare(tracefs, btf).map_err(|e| e.to_string());
        Self { drops, retransmits }
    }

    pub fn drop_config(&self) -> DropConfig {
        self.drops.as_ref().map_or(DropConfig::UNKNOWN, DropSource::config)
    }

    pub fn retransmit_config(&self) -> RetransmitConfig {
        self.retransmits.as_ref().map_or(RetransmitConfig::UNKNOWN, RetransmitSource::config)
    }

    /// The `tp_btf` programs' arguments: drops, retransmits.
    pub fn btf_args(&self) -> (TpBtfArgs, TpBtfArgs) {
        (
            self.drops.as_ref().map_or(TpBtfArgs::ABSENT, DropSource::btf_args),
            self.retransmits.as_ref().map_or(TpBtfArgs::ABSENT, RetransmitSource::btf_args),
        )
    }

    /// The `sk_buff` offsets from BTF, warning about those missing.
    pub fn offsets(btf: Option<&Btf>) -> NetOffsets {
        let Some(btf) = btf else {
            return NetOffsets::UNKNOWN;
        };
        let (offsets, missing) = crate::kernel::offsets::resolve_net(btf);
        for m in &missing {
            tracing::warn!("{m}; drop packet headers or retransmit segment counts may be missing");
        }
        offsets
    }

    /// Attaches what was prepared; a failure leaves that signal out.
    pub fn attach(&mut self, ebpf: &mut Ebpf, kernel_btf: Option<&aya::Btf>) {
        if let Ok(d) = self.drops.as_mut()
            && let Err(e) = d.attach(ebpf, kernel_btf)
        {
            self.drops = Err(e.to_string());
        }
        if let Ok(r) = self.retransmits.as_mut()
            && let Err(e) = r.attach(ebpf, kernel_btf)
        {
            self.retransmits = Err(e.to_string());
        }
    }

    /// What `net.drop` and `tcp.retransmit` use, or why they cannot run.
    pub fn verdicts(&self, signals: &mut Signals) {
        signals.set("net.drop", self.drops.as_ref().map(DropSource::mechanism).map_err(Clone::clone));
        let retransmits = self.retransmits.as_ref().map(|r| r.mechanism.clone());
        signals.set("tcp.retransmit", retransmits.map_err(Clone::clone));
    }

    /// For the ready line: `tp_btf skb:kfree_skb and tp_btf tcp:tcp_retransmit_skb attached`.
    pub fn attached(&self) -> String {
        let mut names = Vec::new();
        if let Ok(d) = &self.drops {
            names.push(d.attached());
        }
        if let Ok(r) = &self.retransmits {
            names.push(r.mechanism.as_str());
        }
        if names.is_empty() { "no network drop/retransmit tracepoints".into() } else { names.join(" and ") }
    }

    /// Decodes a ring buffer record of one of our kinds.
    pub fn record(&mut self, kind: EventKind, bytes: &[u8], cx: &mut Context<'_>) -> Option<Event> {
        match kind {
            EventKind::NetDrop => {
                let raw: NetDropEvent = read(bytes)?;
                let drops = self.drops.as_mut().ok()?;
                let pkt = drops::packet(&raw);
                let reason = drops.reason(raw.reason, raw.location);
                Some(Event::NetDrop(NetDrop {
                    reason: reason.name,
                    reason_code: reason.code,
                    reason_source: reason.source,
                    location: drops.location(raw.location),
                    family: pkt.family,
                    tcp_flags: pkt.tcp_flags,
                    flags_class: drops::class_name(u32::from(raw.class)),
                    src_addr: pkt.src.map(|s| s.0),
                    src_port: pkt.src.map(|s| s.1),
                    dst_addr: pkt.dst.map(|d| d.0),
                    dst_port: pkt.dst.map(|d| d.1),
                    netns: raw.netns,
                    netns_owner: cx.netns.owner(raw.netns),
                    who: socket_owner(raw.sk_full == 1, raw.sk_cgroup_id, cx.cgroups),
                }))
            }
            EventKind::TcpRetransmit => {
                let raw: TcpRetransmitEvent = read(bytes)?;
                let r = self.retransmits.as_ref().ok()?.decode(&raw)?;
                let state = r.decoded.state.or_else(|| crate::sources::tcp::tcp_state_name(i32::from(raw.sk_state)));
                Some(Event::TcpRetransmit(TcpRetransmit {
                    family: r.decoded.family,
                    local_addr: r.decoded.local.0,
                    local_port: r.decoded.local.1,
                    remote_addr: r.decoded.remote.0,
                    remote_port: r.decoded.remote.1,
                    state,
                    segs: r.segs,
                    gso_segs: r.gso_segs,
                    err: r.err,
                    netns: raw.netns,
                    netns_owner: cx.netns.owner(raw.netns),
                    who: socket_owner(raw.sk_full == 1, raw.sk_cgroup_id, cx.cgroups),
                }))
            }
            _ => None,
        }
    }

    /// The drop counts that grew since the last call, as summary events
    /// stamped at their last drop's kernel time.
    pub fn summaries(&mut self, netns: &mut NetnsOwners) -> Vec<(u64, Event)> {
        let Ok(drops) = self.drops.as_mut() else {
            return Vec::new();
        };
        let mut out = drops.poll();
        for (_, s) in &mut out {
            s.netns_owner = netns.owner(s.netns);
        }
        out.into_iter().map(|(ts, s)| (ts, Event::NetDropSummary(s))).collect()
    }

    /// Compact drop counts per (netns, reason) for the status line.
    pub fn status_text(&self) -> Option<String> {
        self.drops.as_ref().ok()?.status_text()
    }

    /// ` kfree_skb_seen=K drops=N drop_events=S drop_events_unsent=U retransmits=R` for the
    /// stopped line.
    pub fn stopped_text(&self) -> String {
        let Ok(d) = &self.drops else {
            return String::new();
        };
        let c = d.counters();
        let full =
            if c.aggregate_full > 0 { format!(" drop_aggregate_full={}", c.aggregate_full) } else { String::new() };
        format!(
            " kfree_skb_seen={} drops={} drop_events={} drop_events_unsent={} retransmits={}{full}",
            c.seen, c.counted, c.events_sent, c.events_unsent, c.retransmits_seen
        )
    }
}

/// The socket's owner when it is a full socket: right even in softirq context.
fn socket_owner(full: bool, cgroup_id: u64, cgroups: &mut CgroupPaths) -> Attribution {
    if !full || cgroup_id == 0 {
        return Attribution::default();
    }
    cgroups.attribute(Some(cgroup_id), CgroupSource::Socket)
}

impl Source for NetSources {
    fn kinds(&self) -> &'static [EventKind] {
        &[EventKind::NetDrop, EventKind::TcpRetransmit]
    }

    fn decode(&mut self, kind: EventKind, bytes: &[u8], cx: &mut Context<'_>, out: &mut Vec<Record>) {
        let Some(header) = read::<observer_common::EventHeader>(bytes) else { return };
        if let Some(event) = self.record(kind, bytes, cx) {
            out.push(cx.record(header.ts_ns, event));
        }
    }

    fn tick(&mut self, cx: &mut Context<'_>, _last: bool, out: &mut Vec<Record>) {
        let summaries = self.summaries(cx.netns);
        out.extend(summaries.into_iter().map(|(ts, event)| cx.record(ts, event)));
    }

    fn ready(&self) -> String {
        format!("{} attached", self.attached())
    }

    fn status(&self) -> Option<String> {
        self.status_text()
    }

    fn stopped(&self) -> String {
        self.stopped_text()
    }
}
