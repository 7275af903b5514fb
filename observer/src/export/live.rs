//! The live view: one readable line per event on stdout, and a status line
//! (events, lost, rate) on stderr — redrawn in place on a terminal, printed
//! every few seconds otherwise.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use crate::event::{Event, Record};

const STATUS_EVERY_PIPE: Duration = Duration::from_secs(10);

pub struct LiveView {
    quiet: bool,
    tty: bool,
    started: Instant,
    last_status: Instant,
    pub events: u64,
}

impl LiveView {
    pub fn new(quiet: bool) -> Self {
        let now = Instant::now();
        Self { quiet, tty: std::io::stderr().is_terminal(), started: now, last_status: now, events: 0 }
    }

    pub fn event(&mut self, record: &Record) {
        self.events += 1;
        if self.quiet {
            return;
        }
        self.clear_status();
        println!("{}", line(record));
    }

    /// Called about once a second.
    pub fn status(&mut self, lost: u64) {
        if !self.tty && self.last_status.elapsed() < STATUS_EVERY_PIPE {
            return;
        }
        self.last_status = Instant::now();
        let text = self.status_text(lost);
        let mut err = std::io::stderr().lock();
        let _ = if self.tty { write!(err, "\r\x1b[2K{text}") } else { writeln!(err, "{text}") };
        let _ = err.flush();
    }

    pub fn status_text(&self, lost: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { self.events as f64 / secs } else { 0.0 };
        format!("observer: {:.0}s events={} lost={} rate={rate:.1}/s", secs, self.events, lost)
    }

    pub fn clear_status(&self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

/// `17:00:00.123456 tcp.reset sent ipv4 127.0.0.1:80 -> 127.0.0.1:4000 TCP_CLOSE NO_SOCKET netns=… cgroup=/… pid=42 (curl)`
pub fn line(record: &Record) -> String {
    let clock = record.time.get(11..26).unwrap_or(&record.time);
    match &record.event {
        Event::TcpReset(r) => {
            let mut s = format!(
                "{clock} tcp.reset {:<8} {} {} -> {}",
                format!("{:?}", r.direction).to_lowercase(),
                r.family,
                endpoint(r.local_addr, r.local_port),
                endpoint(r.remote_addr, r.remote_port),
            );
            if let Some(state) = r.state {
                s += &format!(" {state}");
            }
            if let Some(reason) = &r.reason {
                s += &format!(" reason={reason}");
            }
            s += &format!(" netns={}", r.netns);
            match (&r.who.cgroup_path, r.who.cgroup_id) {
                (Some(path), _) => s += &format!(" cgroup={path}"),
                (None, Some(id)) => s += &format!(" cgroup_id={id}"),
                _ => {}
            }
            if let Some(pid) = r.who.pid {
                s += &format!(" pid={pid} ({})", r.who.comm.as_deref().unwrap_or("?"));
            }
            s
        }
        Event::GoGc(g) => {
            let cycle = g.cycle.map_or_else(|| "?".to_string(), |c| c.to_string());
            let mut s = format!("{clock} go.gc     cycle={cycle} {}", g.go_version.as_deref().unwrap_or("go?"));
            if let Some(path) = &g.who.cgroup_path {
                s += &format!(" cgroup={path}");
            }
            if let Some(pid) = g.who.pid {
                s += &format!(" pid={pid} ({})", g.who.comm.as_deref().unwrap_or("?"));
            }
            s
        }
    }
}

fn endpoint(addr: std::net::IpAddr, port: u16) -> String {
    match addr {
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}
