//! TCP retransmits (`tcp:tcp_retransmit_skb`). The record has the same
//! socket/address layout as the reset tracepoints on every kernel we know,
//! so the reset decoder reads it; the program adds the socket's owner and
//! the skb's segment count, which is what `TcpRetransSegs` adds up.

use std::path::Path;

use aya::Ebpf;
use observer_common::{
    net::{RetransmitConfig, TcpRetransmitEvent},
    tp_btf::{RECORD_SOCKET_TUPLE, TpBtfArgs},
};

use crate::{
    kernel::{btf::Btf, tp_btf, tracefs::Format},
    sources::tcp::{Decoded, ResetDecoder, TcpError},
};

#[derive(Debug, thiserror::Error)]
pub enum RetransmitError {
    #[error(transparent)]
    Layout(#[from] TcpError),
    #[error(transparent)]
    Tracefs(#[from] crate::kernel::tracefs::TracefsError),
    #[error("attaching tcp:tcp_retransmit_skb: {0}")]
    Attach(String),
}

pub struct RetransmitSource {
    decoder: ResetDecoder,
    /// Offset of `int err` (6.14+: the tracepoint also fires for failed attempts).
    err: Option<usize>,
    /// The `tp_btf` program's arguments, or why it cannot be used.
    args: Result<TpBtfArgs, String>,
    /// What is attached (`tp_btf` or the classic tracepoint).
    pub mechanism: String,
}

/// A decoded retransmit.
pub struct Retransmit {
    pub decoded: Decoded,
    /// Segments the kernel counted for this skb (at least 1).
    pub segs: u32,
    /// `skb_shinfo(skb)->gso_segs` as read (0 when unreadable).
    pub gso_segs: u32,
    pub err: Option<i32>,
}

impl RetransmitSource {
    pub fn prepare(tracefs: &Path, btf: Option<&Btf>) -> Result<Self, RetransmitError> {
        let format = Format::read(tracefs, "tcp", "tcp_retransmit_skb")?;
        let decoder = ResetDecoder::new("tcp_retransmit_skb", &format, btf)?;
        let args = tp_btf::args(btf, "tcp_retransmit_skb", |a| {
            tp_btf::at(a.sk, 0, false) && tp_btf::at(a.skb, 1, false) && tp_btf::at(a.err, 2, true)
        });
        Ok(Self { decoder, err: format.field("err").map(|f| f.offset), args, mechanism: String::new() })
    }

    pub fn btf_args(&self) -> TpBtfArgs {
        self.args.clone().unwrap_or(TpBtfArgs::ABSENT)
    }

    pub fn config(&self) -> RetransmitConfig {
        let l = self.decoder.layout();
        RetransmitConfig { skaddr: l.skaddr, skbaddr: l.skbaddr, record_len: l.record_len, _pad: 0 }
    }

    pub fn attach(&mut self, ebpf: &mut Ebpf, kernel_btf: Option<&aya::Btf>) -> Result<(), RetransmitError> {
        let programs = tp_btf::Programs {
            btf: "tcp_retransmit_skb_btf",
            classic: "tcp_retransmit_skb",
            category: "tcp",
            name: "tcp_retransmit_skb",
        };
        self.mechanism = tp_btf::attach(ebpf, kernel_btf, &self.args, &programs).map_err(RetransmitError::Attach)?;
        Ok(())
    }

    pub fn decode(&self, ev: &TcpRetransmitEvent) -> Option<Retransmit> {
        let len = (ev.record_len as usize).min(ev.record.len());
        let record = &ev.record[..len];
        if ev.record_kind == RECORD_SOCKET_TUPLE {
            let (mut decoded, err) = crate::sources::tcp::decode_socket_tuple(record)?;
            // The retransmit tracepoint has no reason: its extra argument is `err`.
            decoded.reason = None;
            return Some(Retransmit { decoded, segs: segments(ev), gso_segs: u32::from(ev.shinfo_segs), err });
        }
        let decoded = self.decoder.decode(record)?;
        let err = self
            .err
            .and_then(|o| record.get(o..o + 4))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_ne_bytes);
        Some(Retransmit { decoded, segs: segments(ev), gso_segs: u32::from(ev.shinfo_segs), err })
    }
}

/// `tcp_skb_pcount()` — the count `TcpRetransSegs` adds — else the shared
/// info's `gso_segs`; a non-GSO skb is one segment.
fn segments(ev: &TcpRetransmitEvent) -> u32 {
    let segs = if ev.cb_segs != 0 { ev.cb_segs } else { ev.shinfo_segs };
    u32::from(segs).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmit_format_of_this_kernel_is_understood() {
        let Some(tracefs) = crate::kernel::tracefs::find() else {
            eprintln!("SKIPPED: tracefs is not mounted");
            return;
        };
        let src = RetransmitSource::prepare(&tracefs, None).unwrap();
        let c = src.config();
        assert!(c.record_len > 0 && c.skaddr != observer_common::OFFSET_UNKNOWN, "{c:?}");
    }

    #[test]
    fn segments_are_at_least_one() {
        let mut ev = TcpRetransmitEvent {
            header: observer_common::EventHeader { kind: 11, cpu: 0, ts_ns: 0 },
            sk_cgroup_id: 0,
            netns: 0,
            cb_segs: 0,
            shinfo_segs: 0,
            sk_full: 1,
            sk_state: 1,
            record_kind: 0,
            _pad: 0,
            record_len: 0,
            record: [0; observer_common::tcp::RECORD_MAX],
        };
        assert_eq!(segments(&ev), 1);
        ev.shinfo_segs = 3;
        assert_eq!(segments(&ev), 3);
        ev.cb_segs = 20;
        assert_eq!(segments(&ev), 20);
    }
}
