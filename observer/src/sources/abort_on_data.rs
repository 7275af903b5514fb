//! Telling a reset received from the kernel aborting a connection itself.
//!
//! `tcp:tcp_receive_reset` fires in `tcp_reset()`, which also runs when a
//! closed socket still in FIN_WAIT1/2 gets data (the kernel's "abort on data",
//! `TCPAbortOnData`): no RST arrived, yet the tracepoint fires, and the kernel
//! then sends a reset on the same connection at once, from the same softirq.
//! Seen under emulation, where the orphan has not become a time-wait socket yet.
//! So a received reset in those states is held briefly and dropped when that
//! sent reset follows; otherwise it is passed on unchanged.

use std::time::{Duration, Instant};

use crate::event::{Direction, Event, Record, TcpReset};

/// Both records are committed microseconds apart; this is far longer.
const HOLD: Duration = Duration::from_millis(200);

#[derive(Default)]
pub struct AbortOnData {
    held: Vec<(Instant, Record)>,
}

impl AbortOnData {
    /// Passes `record` on (into `out`) unless it must wait for its pair.
    pub fn admit(&mut self, record: Record, out: &mut Vec<Record>) {
        let Event::TcpReset(reset) = &record.event else {
            out.push(record);
            return;
        };
        if reset.direction == Direction::Received && matches!(reset.state, Some("TCP_FIN_WAIT1" | "TCP_FIN_WAIT2")) {
            self.held.push((Instant::now(), record));
            return;
        }
        if reset.direction == Direction::Sent && reset.reason.as_deref().is_none_or(|r| r == "TCP_ABORT_ON_DATA") {
            self.held.retain(|(_, held)| !same_connection(held, reset));
        }
        out.push(record);
    }

    /// Passes on what waited long enough (everything when `all`).
    pub fn release(&mut self, all: bool, out: &mut Vec<Record>) {
        let now = Instant::now();
        let (done, keep): (Vec<_>, Vec<_>) =
            self.held.drain(..).partition(|(at, _)| all || now.duration_since(*at) >= HOLD);
        self.held = keep;
        out.extend(done.into_iter().map(|(_, r)| r));
    }
}

fn same_connection(held: &Record, sent: &TcpReset) -> bool {
    matches!(&held.event, Event::TcpReset(r)
        if r.netns == sent.netns
            && (r.local_addr, r.local_port) == (sent.local_addr, sent.local_port)
            && (r.remote_addr, r.remote_port) == (sent.remote_addr, sent.remote_port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Attribution;

    fn reset(direction: Direction, state: &'static str, reason: Option<&str>, local_port: u16) -> Record {
        Record {
            time: String::new(),
            time_unix_nano: 0,
            event: Event::TcpReset(TcpReset {
                direction,
                family: "ipv4",
                local_addr: "127.0.0.1".parse().unwrap(),
                local_port,
                remote_addr: "127.0.0.1".parse().unwrap(),
                remote_port: 4000,
                state: Some(state),
                reason: reason.map(String::from),
                netns: 1,
                who: Attribution::default(),
            }),
        }
    }

    #[test]
    fn an_abort_on_data_is_not_a_received_reset() {
        let mut filter = AbortOnData::default();
        let mut out = Vec::new();
        filter.admit(reset(Direction::Received, "TCP_FIN_WAIT2", None, 7000), &mut out);
        assert!(out.is_empty());
        filter.admit(reset(Direction::Sent, "TCP_CLOSE", Some("TCP_ABORT_ON_DATA"), 7000), &mut out);
        filter.release(true, &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0].event, Event::TcpReset(r) if r.direction == Direction::Sent));
    }

    #[test]
    fn a_real_reset_to_a_closing_socket_is_kept() {
        let mut filter = AbortOnData::default();
        let mut out = Vec::new();
        filter.admit(reset(Direction::Received, "TCP_FIN_WAIT2", None, 7000), &mut out);
        // A reset sent on another connection does not pair with it.
        filter.admit(reset(Direction::Sent, "TCP_CLOSE", Some("TCP_ABORT_ON_DATA"), 7001), &mut out);
        filter.release(false, &mut out);
        assert_eq!(out.len(), 1, "held for now");
        filter.release(true, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn other_received_resets_pass_at_once() {
        let mut filter = AbortOnData::default();
        let mut out = Vec::new();
        filter.admit(reset(Direction::Received, "TCP_ESTABLISHED", None, 7000), &mut out);
        assert_eq!(out.len(), 1);
    }
}
