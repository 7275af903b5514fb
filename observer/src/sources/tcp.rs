//! TCP resets sent (`tcp:tcp_send_reset`) and received (`tcp:tcp_receive_reset`).
//!
//! The programs copy each tracepoint record verbatim; this module decodes it
//! with the running kernel's `format` file. Two layouts exist: older kernels
//! (5.10, 6.1) have split `sport`/`saddr`/`saddr_v6` fields (a `family`
//! too on 6.1), newer ones (6.10+) `sockaddr`-sized `saddr`/`daddr` fields
//! and a `reason`.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use aya::{
    Ebpf,
    programs::{FEntry, KProbe},
};
use observer_common::{
    OFFSET_UNKNOWN,
    tcp::{DIRECTION_SENT, DIRECTION_SENT_NO_SOCKET, PacketTuple, RECORD_MAX, ResetTracepointLayout, TcpResetEvent},
    tp_btf::{RECORD_SOCKET_TUPLE, SocketTuple, TpBtfArgs},
};

use crate::{
    event::{Attribution, CgroupSource, Direction, Record, TcpReset},
    kernel::{
        btf::Btf,
        features::{chain, program},
        tp_btf,
        tracefs::{Format, TracefsError},
    },
    sources::{Context, Source, abort_on_data::AbortOnData, comm, read},
};

#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("tcp:{tracepoint} has an address layout observer does not know (fields: {fields})")]
    UnknownLayout { tracepoint: &'static str, fields: String },
    #[error("tcp:{tracepoint} record is {len} bytes, more than the {RECORD_MAX} the program copies")]
    TooLong { tracepoint: &'static str, len: usize },
    #[error("attaching tcp:{tracepoint}: {error}")]
    Attach { tracepoint: &'static str, error: String },
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[derive(Debug, Clone)]
enum AddrLayout {
    /// `__u8 saddr[28]`, `__u8 daddr[28]`: a `sockaddr_in` or `sockaddr_in6`.
    Sockaddr { saddr: usize, daddr: usize },
    /// Separate family, ports (host order) and v4/v6 address fields. Before
    /// 6.1 there is no family: the v6 fields then hold a v4-mapped address
    /// for an IPv4 socket.
    Split {
        family: Option<usize>,
        sport: usize,
        dport: usize,
        saddr: usize,
        daddr: usize,
        saddr_v6: usize,
        daddr_v6: usize,
    },
}

/// Decodes one tracepoint's records on this kernel.
#[derive(Debug, Clone)]
pub struct ResetDecoder {
    addr: AddrLayout,
    state: Option<usize>,
    reason: Option<(usize, HashMap<i64, String>)>,
    layout: ResetTracepointLayout,
}

pub struct Decoded {
    pub family: &'static str,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    pub state: Option<&'static str>,
    pub reason: Option<String>,
}

impl ResetDecoder {
    pub fn new(tracepoint: &'static str, format: &Format, btf: Option<&Btf>) -> Result<Self, TcpError> {
        let off = |name: &str| format.field(name).map(|f| f.offset);
        let addr = match (format.field("saddr"), format.field("daddr")) {
            (Some(s), Some(d)) if s.size == 28 && d.size == 28 => {
                AddrLayout::Sockaddr { saddr: s.offset, daddr: d.offset }
            }
            _ => match (off("sport"), off("dport"), off("saddr"), off("daddr"), off("saddr_v6"), off("daddr_v6")) {
                (Some(sport), Some(dport), Some(saddr), Some(daddr), Some(saddr_v6), Some(daddr_v6)) => {
                    AddrLayout::Split { family: off("family"), sport, dport, saddr, daddr, saddr_v6, daddr_v6 }
                }
                _ => {
                    let fields = format.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(",");
                    return Err(TcpError::UnknownLayout { tracepoint, fields });
                }
            },
        };
        let len = format.record_len();
        if len > RECORD_MAX {
            return Err(TcpError::TooLong { tracepoint, len });
        }
        // Reason names come from the kernel's own enum: values differ between kernels.
        let reason = format.field("reason").map(|f| {
            let names = f
                .c_type
                .strip_prefix("enum ")
                .and_then(|name| btf?.enum_values(name).ok())
                .map(strip_common_prefix)
                .unwrap_or_default();
            (f.offset, names)
        });
        let ptr = |name: &str| off(name).map_or(OFFSET_UNKNOWN, |o| o as u32);
        Ok(Self {
            addr,
            state: off("state"),
            reason,
            layout: ResetTracepointLayout {
                skaddr: ptr("skaddr"),
                skbaddr: ptr("skbaddr"),
                record_len: len as u32,
                _pad: 0,
            },
        })
    }

    pub fn layout(&self) -> ResetTracepointLayout {
        self.layout
    }

    /// A [`SocketTuple`] record (the `tp_btf` programs'), with the reason
    /// named as this tracepoint's `format` names it.
    pub fn decode_tuple(&self, record: &[u8]) -> Option<(Decoded, Option<i32>)> {
        let (mut decoded, extra) = decode_socket_tuple(record)?;
        decoded.reason = match (&self.reason, extra) {
            (Some((_, names)), Some(value)) => {
                Some(names.get(&i64::from(value)).cloned().unwrap_or_else(|| value.to_string()))
            }
            _ => None,
        };
        Some((decoded, extra))
    }

    pub fn decode(&self, record: &[u8]) -> Option<Decoded> {
        let (family, local, remote) = match self.addr {
            AddrLayout::Sockaddr { saddr, daddr } => {
                let (family, local) = sockaddr(record.get(saddr..saddr + 28)?)?;
                let (_, remote) = sockaddr(record.get(daddr..daddr + 28)?)?;
                (family, local, remote)
            }
            AddrLayout::Split { family, sport, dport, saddr, daddr, saddr_v6, daddr_v6 } => {
                let family = match family {
                    Some(o) => u16_ne(record, o)?,
                    None if v6(record, saddr_v6)?.to_ipv4_mapped().is_some() => AF_INET,
                    None => AF_INET6,
                };
                let (s, d) = if family == AF_INET6 {
                    (IpAddr::V6(v6(record, saddr_v6)?), IpAddr::V6(v6(record, daddr_v6)?))
                } else {
                    (IpAddr::V4(v4(record, saddr)?), IpAddr::V4(v4(record, daddr)?))
                };
                (family, (s, u16_ne(record, sport)?), (d, u16_ne(record, dport)?))
            }
        };
        let state = self.state.and_then(|o| i32_ne(record, o)).and_then(tcp_state_name);
        let reason = self.reason.as_ref().and_then(|(o, names)| {
            let value = i64::from(i32_ne(record, *o)?);
            Some(names.get(&value).cloned().unwrap_or_else(|| value.to_string()))
        });
        Some(Decoded { family: if family == AF_INET6 { "ipv6" } else { "ipv4" }, local, remote, state, reason })
    }
}

/// What a `tp_btf` program recorded: the addresses as the classic
/// tracepoint has them, and its extra argument (a reason, or `err`).
pub fn decode_socket_tuple(record: &[u8]) -> Option<(Decoded, Option<i32>)> {
    if record.len() < size_of::<SocketTuple>() {
        return None;
    }
    // SAFETY: length checked; SocketTuple is plain old data.
    let t: SocketTuple = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let (family, local, remote) = match t.family {
        AF_INET6 => ("ipv6", IpAddr::V6(Ipv6Addr::from(t.saddr)), IpAddr::V6(Ipv6Addr::from(t.daddr))),
        AF_INET => ("ipv4", IpAddr::V4(v4(&t.saddr, 0)?), IpAddr::V4(v4(&t.daddr, 0)?)),
        // No address (a reset with neither socket nor packet), as the tracepoint leaves it.
        _ => ("ipv4", IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
    };
    let decoded = Decoded {
        family,
        local: (local, t.sport),
        remote: (remote, t.dport),
        state: tcp_state_name(t.state),
        reason: None,
    };
    Some((decoded, (t.has_extra == 1).then_some(t.extra)))
}

/// `SK_RST_REASON_NOT_SPECIFIED` → `NOT_SPECIFIED`, as tracefs prints them.
fn strip_common_prefix(values: &[(String, i64)]) -> HashMap<i64, String> {
    let first = values.first().map(|(n, _)| n.as_str()).unwrap_or("");
    let mut prefix = first.len();
    for (name, _) in values {
        prefix = prefix.min(first.bytes().zip(name.bytes()).take_while(|(a, b)| a == b).count());
    }
    let prefix = first[..prefix].rfind('_').map_or(0, |i| i + 1);
    values.iter().map(|(name, value)| (*value, name.get(prefix..).unwrap_or(name).to_string())).collect()
}

fn u16_ne(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn i32_ne(b: &[u8], o: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn v4(b: &[u8], o: usize) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(<[u8; 4]>::try_from(b.get(o..o + 4)?).ok()?))
}

fn v6(b: &[u8], o: usize) -> Option<Ipv6Addr> {
    Some(Ipv6Addr::from(<[u8; 16]>::try_from(b.get(o..o + 16)?).ok()?))
}

/// A `sockaddr_in`/`sockaddr_in6`: family (host order), port (network order), address.
fn sockaddr(b: &[u8]) -> Option<(u16, (IpAddr, u16))> {
    let family = u16_ne(b, 0)?;
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    let addr = match family {
        AF_INET => IpAddr::V4(v4(b, 4)?),
        AF_INET6 => IpAddr::V6(v6(b, 8)?),
        // No address (a reset with neither socket nor packet).
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    Some((family, (addr, port)))
}

/// Names of `enum tcp_state` (a stable uapi numbering).
pub fn tcp_state_name(state: i32) -> Option<&'static str> {
    const NAMES: [&str; 12] = [
        "TCP_ESTABLISHED",
        "TCP_SYN_SENT",
        "TCP_SYN_RECV",
        "TCP_FIN_WAIT1",
        "TCP_FIN_WAIT2",
        "TCP_TIME_WAIT",
        "TCP_CLOSE",
        "TCP_CLOSE_WAIT",
        "TCP_LAST_ACK",
        "TCP_LISTEN",
        "TCP_CLOSING",
        "TCP_NEW_SYN_RECV",
    ];
    usize::try_from(state).ok().and_then(|s| s.checked_sub(1)).and_then(|i| NAMES.get(i).copied())
}

/// Both reset tracepoints, ready to load and attach.
pub struct ResetSource {
    pub sent: ResetDecoder,
    pub received: ResetDecoder,
    /// The send tracepoint misses resets without a full socket (before 6.10).
    needs_fallback: bool,
    /// The mechanisms attached: sent, received.
    pub mechanisms: (String, String),
    /// Each tracepoint's `tp_btf` arguments, or why not: sent, received.
    args: (Result<TpBtfArgs, String>, Result<TpBtfArgs, String>),
    aborts: AbortOnData,
}

impl ResetSource {
    pub fn prepare(tracefs: &Path, btf: Option<&Btf>) -> Result<Self, TcpError> {
        let send_format = Format::read(tracefs, "tcp", "tcp_send_reset")?;
        let sent = ResetDecoder::new("tcp_send_reset", &send_format, btf)?;
        let received =
            ResetDecoder::new("tcp_receive_reset", &Format::read(tracefs, "tcp", "tcp_receive_reset")?, btf)?;
        let has_sk =
            |a: &TpBtfArgs| tp_btf::at(a.sk, 0, false) && tp_btf::at(a.skb, 1, true) && tp_btf::at(a.reason, 2, true);
        Ok(Self {
            sent,
            received,
            needs_fallback: tracepoint_misses_no_socket_resets(&send_format),
            mechanisms: Default::default(),
            args: (tp_btf::args(btf, "tcp_send_reset", has_sk), tp_btf::args(btf, "tcp_receive_reset", has_sk)),
            aborts: AbortOnData::default(),
        })
    }

    /// The `tp_btf` programs' arguments (all absent where they are not used).
    pub fn btf_args(&self) -> (TpBtfArgs, TpBtfArgs) {
        let or_absent = |a: &Result<TpBtfArgs, String>| a.clone().unwrap_or(TpBtfArgs::ABSENT);
        (or_absent(&self.args.0), or_absent(&self.args.1))
    }

    /// Attaches the tracepoints (`tp_btf` where it works), plus the no-socket
    /// hook where this kernel's tracepoint misses those resets; notes the
    /// mechanisms in use.
    pub fn attach(&mut self, ebpf: &mut Ebpf, kernel_btf: Option<&aya::Btf>) -> Result<(), TcpError> {
        let mut attached = Vec::new();
        for (name, args) in [("tcp_send_reset", &self.args.0), ("tcp_receive_reset", &self.args.1)] {
            let btf_name = if name == "tcp_send_reset" { "tcp_send_reset_btf" } else { "tcp_receive_reset_btf" };
            let programs = tp_btf::Programs { btf: btf_name, classic: name, category: "tcp", name };
            let mechanism = tp_btf::attach(ebpf, kernel_btf, args, &programs)
                .map_err(|error| TcpError::Attach { tracepoint: name, error })?;
            attached.push(mechanism);
        }
        let received = attached.pop().unwrap_or_default();
        let mut sent = attached.pop().unwrap_or_default();
        if self.needs_fallback {
            match attach_no_socket_hooks(ebpf) {
                Ok(kind) => sent += &format!(" + {kind} tcp_v4_send_reset/tcp_v6_send_reset (no-socket resets)"),
                Err(why) => {
                    tracing::warn!(
                        "this kernel's tcp:tcp_send_reset misses resets sent without a full socket (closed ports, \
                         time-wait), and neither fentry nor kprobe could hook them: {why}; those resets go unseen"
                    );
                    sent += " (resets sent without a full socket go unseen: no fentry or kprobe hook)";
                }
            }
        }
        self.mechanisms = (sent, received);
        Ok(())
    }

    /// Decodes one ring buffer record; `None` when it is malformed.
    pub fn decode(&self, event: &TcpResetEvent) -> Option<(Direction, Decoded)> {
        let len = (event.record_len as usize).min(RECORD_MAX);
        let record = &event.record[..len];
        let tuple = event.record_kind == u32::from(RECORD_SOCKET_TUPLE);
        match event.direction {
            DIRECTION_SENT_NO_SOCKET => Some((Direction::Sent, decode_packet_tuple(record)?)),
            DIRECTION_SENT if tuple => Some((Direction::Sent, self.sent.decode_tuple(record)?.0)),
            DIRECTION_SENT => Some((Direction::Sent, self.sent.decode(record)?)),
            _ if tuple => Some((Direction::Received, self.received.decode_tuple(record)?.0)),
            _ => Some((Direction::Received, self.received.decode(record)?)),
        }
    }
}

impl Source for ResetSource {
    fn kinds(&self) -> &'static [observer_common::EventKind] {
        &[observer_common::EventKind::TcpReset]
    }

    fn decode(&mut self, _: observer_common::EventKind, bytes: &[u8], cx: &mut Context<'_>, out: &mut Vec<Record>) {
        let Some(raw) = read::<TcpResetEvent>(bytes) else { return };
        let Some((direction, mut decoded)) = ResetSource::decode(self, &raw) else { return };
        // Kernels whose record has no state still let us read the socket's.
        decoded.state = decoded.state.or_else(|| tcp_state_name(i32::from(raw.sk_state)));
        let who = attribution(&raw, cx);
        let record =
            cx.record(raw.header.ts_ns, crate::event::Event::TcpReset(to_event(direction, decoded, raw.netns, who)));
        self.aborts.admit(record, out);
    }

    fn flush(&mut self, last: bool, out: &mut Vec<Record>) {
        self.aborts.release(last, out);
    }

    fn ready(&self) -> String {
        format!("tcp resets: {}; {}", self.mechanisms.0, self.mechanisms.1)
    }
}

/// The socket's owner when the kernel had a full socket. A reset with no
/// full socket (a closed port, a time-wait socket) belongs to no cgroup:
/// the kernel sends it from softirq on whatever task the CPU interrupted,
/// so only its network namespace says where it happened.
///
/// The current task is reported only when it plausibly is the owner: the
/// socket still has one, and the task shares its namespace and cgroup (a
/// softirq can still land on another task of the same container).
fn attribution(ev: &TcpResetEvent, cx: &mut Context<'_>) -> Attribution {
    let (cgroup_id, cgroup_source) = if ev.sk_full == 1 && ev.sk_cgroup_id != 0 {
        (Some(ev.sk_cgroup_id), CgroupSource::Socket)
    } else {
        (None, CgroupSource::None)
    };
    let task_meaningful = cgroup_source == CgroupSource::Socket
        && ev.sk_owned == 1
        && ev.pid != 0
        && ev.netns == ev.task_netns
        && ev.sk_cgroup_id == ev.task_cgroup_id;
    Attribution {
        pid: task_meaningful.then_some(ev.pid),
        comm: task_meaningful.then(|| comm(&ev.comm)),
        ..cx.cgroups.attribute(cgroup_id, cgroup_source)
    }
}

/// Kernels before 6.10 fire `tcp:tcp_send_reset` only for full sockets; the
/// same release added the `reason` field, so its absence marks them.
pub fn tracepoint_misses_no_socket_resets(send_format: &Format) -> bool {
    send_format.field("reason").is_none()
}

/// fentry where it works, else kprobe: one program per IP version.
fn attach_no_socket_hooks(ebpf: &mut Ebpf) -> Result<&'static str, String> {
    let mut fentry = || -> Result<(), String> {
        let btf = aya::Btf::from_sys_fs().map_err(|e| chain(&e))?;
        for (name, function) in
            [("tcp_v4_send_reset_fentry", "tcp_v4_send_reset"), ("tcp_v6_send_reset_fentry", "tcp_v6_send_reset")]
        {
            let p: &mut FEntry = program(ebpf, name)?;
            p.load(function, &btf).map_err(|e| chain(&e))?;
            p.attach().map_err(|e| chain(&e))?;
        }
        Ok(())
    };
    let fentry_err = match fentry() {
        Ok(()) => return Ok("fentry"),
        Err(e) => e,
    };
    for (name, function) in
        [("tcp_v4_send_reset_kprobe", "tcp_v4_send_reset"), ("tcp_v6_send_reset_kprobe", "tcp_v6_send_reset")]
    {
        let p: &mut KProbe = program(ebpf, name)?;
        p.load().map_err(|e| format!("fentry: {fentry_err}; kprobe: {}", chain(&e)))?;
        p.attach(function, 0).map_err(|e| format!("fentry: {fentry_err}; kprobe: {}", chain(&e)))?;
    }
    Ok("kprobe")
}

/// A reset the fallback hook saw: the packet it answers, so its sender is the
/// packet's destination.
fn decode_packet_tuple(record: &[u8]) -> Option<Decoded> {
    if record.len() < size_of::<PacketTuple>() {
        return None;
    }
    // SAFETY: length checked; PacketTuple is plain old data.
    let t: PacketTuple = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let (family, src, dst) = match t.family {
        4 => ("ipv4", IpAddr::V4(v4(&t.saddr, 0)?), IpAddr::V4(v4(&t.daddr, 0)?)),
        6 => ("ipv6", IpAddr::V6(Ipv6Addr::from(t.saddr)), IpAddr::V6(Ipv6Addr::from(t.daddr))),
        _ => return None,
    };
    Some(Decoded { family, local: (dst, t.dport), remote: (src, t.sport), state: None, reason: None })
}

/// Builds the event from a decoded record and its attribution.
pub fn to_event(direction: Direction, d: Decoded, netns: u32, who: crate::event::Attribution) -> TcpReset {
    TcpReset {
        direction,
        family: d.family,
        local_addr: d.local.0,
        local_port: d.local.1,
        remote_addr: d.remote.0,
        remote_port: d.remote.1,
        state: d.state,
        reason: d.reason,
        netns,
        who,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND_6_18: &str = "format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;
\tfield:__u8 daddr[28];\toffset:60;\tsize:28;\tsigned:0;
";

    /// `tcp:tcp_receive_reset` as on 6.1 to 6.18 (split fields, no reason).
    const RECEIVE_SPLIT: &str = "format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u16 sport;\toffset:16;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:18;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:20;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:22;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:26;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:30;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:46;\tsize:16;\tsigned:0;
\tfield:__u64 sock_cookie;\toffset:64;\tsize:8;\tsigned:0;
";

    #[test]
    fn decodes_sockaddr_layout_ipv6_with_state() {
        let dec = ResetDecoder::new("tcp_send_reset", &Format::parse(SEND_6_18).unwrap(), None).unwrap();
        assert_eq!(dec.layout().skaddr, 16);
        assert_eq!(dec.layout().skbaddr, 8);
        assert_eq!(dec.layout().record_len, 88);
        let mut rec = vec![0u8; 88];
        rec[24..28].copy_from_slice(&1i32.to_ne_bytes());
        rec[28..32].copy_from_slice(&1i32.to_ne_bytes());
        rec[32..34].copy_from_slice(&AF_INET6.to_ne_bytes());
        rec[34..36].copy_from_slice(&8080u16.to_be_bytes());
        rec[40..56].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        rec[60..62].copy_from_slice(&AF_INET6.to_ne_bytes());
        rec[62..64].copy_from_slice(&40000u16.to_be_bytes());
        rec[68..84].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        let d = dec.decode(&rec).unwrap();
        assert_eq!(d.family, "ipv6");
        assert_eq!(d.local, (IpAddr::V6(Ipv6Addr::LOCALHOST), 8080));
        assert_eq!(d.remote, ("fd00::2".parse().unwrap(), 40000));
        assert_eq!(d.state, Some("TCP_ESTABLISHED"));
        // Without BTF the reason stays numeric rather than guessed.
        assert_eq!(d.reason.as_deref(), Some("1"));
    }

    #[test]
    fn decodes_split_layout_ipv4() {
        let dec = ResetDecoder::new("tcp_receive_reset", &Format::parse(RECEIVE_SPLIT).unwrap(), None).unwrap();
        assert_eq!(dec.layout().skbaddr, OFFSET_UNKNOWN);
        let mut rec = vec![0u8; 72];
        rec[16..18].copy_from_slice(&1234u16.to_ne_bytes());
        rec[18..20].copy_from_slice(&80u16.to_ne_bytes());
        rec[20..22].copy_from_slice(&AF_INET.to_ne_bytes());
        rec[22..26].copy_from_slice(&[10, 0, 0, 1]);
        rec[26..30].copy_from_slice(&[10, 0, 0, 2]);
        let d = dec.decode(&rec).unwrap();
        assert_eq!(d.family, "ipv4");
        assert_eq!(d.local, (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1234));
        assert_eq!(d.remote, (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 80));
        assert_eq!((d.state, d.reason), (None, None));
    }

    /// `tcp:tcp_send_reset` on 5.10: split fields and no family.
    const SEND_5_10: &str = "format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;
";

    #[test]
    fn without_a_family_field_a_v4_mapped_address_is_ipv4() {
        let dec = ResetDecoder::new("tcp_send_reset", &Format::parse(SEND_5_10).unwrap(), None).unwrap();
        assert_eq!(dec.layout().record_len, 72);
        let mut rec = vec![0u8; 72];
        rec[28..30].copy_from_slice(&7001u16.to_ne_bytes());
        rec[30..32].copy_from_slice(&40000u16.to_ne_bytes());
        rec[32..36].copy_from_slice(&[10, 0, 0, 1]);
        rec[36..40].copy_from_slice(&[10, 0, 0, 2]);
        rec[40..56].copy_from_slice(&Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets());
        rec[56..72].copy_from_slice(&Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped().octets());
        let d = dec.decode(&rec).unwrap();
        assert_eq!(d.family, "ipv4");
        assert_eq!(d.local, (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 7001));
        assert_eq!(d.remote, (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 40000));
        // An IPv6 socket: the v4 fields hold the kernel's placeholder.
        rec[32..36].copy_from_slice(&[127, 0, 0, 6]);
        rec[40..56].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        rec[56..72].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        let d = dec.decode(&rec).unwrap();
        assert_eq!(d.family, "ipv6");
        assert_eq!(d.local, (IpAddr::V6(Ipv6Addr::LOCALHOST), 7001));
        assert_eq!(d.remote, ("fd00::2".parse().unwrap(), 40000));
    }

    #[test]
    fn short_records_are_rejected_not_misread() {
        let dec = ResetDecoder::new("tcp_receive_reset", &Format::parse(RECEIVE_SPLIT).unwrap(), None).unwrap();
        assert!(dec.decode(&[0u8; 20]).is_none());
    }

    #[test]
    fn unknown_layout_is_an_error_naming_the_fields() {
        let fmt = Format::parse("\tfield:int foo;\toffset:8;\tsize:4;\tsigned:1;").unwrap();
        let err = ResetDecoder::new("tcp_send_reset", &fmt, None).unwrap_err();
        assert!(err.to_string().contains("fields: foo"), "{err}");
    }

    #[test]
    fn reason_prefix_is_stripped_like_tracefs_prints_it() {
        let names =
            strip_common_prefix(&[("SK_RST_REASON_NOT_SPECIFIED".into(), 0), ("SK_RST_REASON_NO_SOCKET".into(), 1)]);
        assert_eq!(names[&0], "NOT_SPECIFIED");
        assert_eq!(names[&1], "NO_SOCKET");
    }

    #[test]
    fn a_packet_tuple_answers_with_its_destination_as_the_sender() {
        let mut record = vec![0u8; 40];
        record[0] = 4;
        record[2..4].copy_from_slice(&40000u16.to_ne_bytes());
        record[4..6].copy_from_slice(&7001u16.to_ne_bytes());
        record[8..12].copy_from_slice(&[10, 0, 0, 1]);
        record[24..28].copy_from_slice(&[10, 0, 0, 2]);
        let d = decode_packet_tuple(&record).unwrap();
        assert_eq!(d.local, (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 7001));
        assert_eq!(d.remote, (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 40000));
        assert!(decode_packet_tuple(&record[..39]).is_none());
        record[0] = 9;
        assert!(decode_packet_tuple(&record).is_none());
    }

    #[test]
    fn only_kernels_without_a_reason_field_need_the_fallback() {
        assert!(!tracepoint_misses_no_socket_resets(&Format::parse(SEND_6_18).unwrap()));
        let send_6_1 = "\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:__u16 sport;\toffset:16;\tsize:2;\tsigned:0;";
        assert!(tracepoint_misses_no_socket_resets(&Format::parse(send_6_1).unwrap()));
    }

    #[test]
    fn tcp_states_are_named() {
        assert_eq!(tcp_state_name(7), Some("TCP_CLOSE"));
        assert_eq!(tcp_state_name(0), None);
        assert_eq!(tcp_state_name(13), None);
    }
}
