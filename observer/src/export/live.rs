//! Line mode: what `observer run` prints when it does not own a terminal
//! (stdout piped or redirected, CI, `--output plain`). One line per closed
//! episode on stdout and, with `--events`, one per event, at most
//! `--event-lines-per-sec` a second (the rest are counted, and a line says
//! how many were skipped); a status line (events, lost, rate, episodes,
//! export) on stderr every few seconds. No escape codes, ever: a workload's
//! own text (names, cgroup paths, comms) is escaped with [`printable`].
//! On a terminal the live view (`crate::view`) shows the same and more.

use std::time::{Duration, Instant};

use crate::{
    correlate::Episode,
    event::{Attribution, Event, GoOwner, Record},
    netns::NetnsOwner,
};

const STATUS_EVERY: Duration = Duration::from_secs(10);
/// Event lines printed a second at most by default (`--events`); the events file has every event.
pub const EVENT_LINES_PER_SEC: u32 = 100;

/// At most `per_sec` lines a second; what is over is counted.
#[derive(Debug)]
pub struct LineBudget {
    per_sec: u32,
    window: Option<Instant>,
    used: u32,
    /// Skipped since the last report.
    pending: u64,
    pub skipped: u64,
}

impl LineBudget {
    pub fn new(per_sec: u32) -> Self {
        LineBudget { per_sec, window: None, used: 0, pending: 0, skipped: 0 }
    }

    /// Whether a line may be printed at `now`.
    pub fn admit(&mut self, now: Instant) -> bool {
        if self.window.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1)) {
            self.window = Some(now);
            self.used = 0;
        }
        if self.used < self.per_sec {
            self.used += 1;
            return true;
        }
        self.pending += 1;
        self.skipped += 1;
        false
    }

    /// The skipped count to report (once), when its second is over or `now`
    /// is the end.
    pub fn report(&mut self, now: Instant, end: bool) -> Option<u64> {
        let over = end || self.window.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1));
        (over && self.pending > 0).then(|| std::mem::take(&mut self.pending))
    }
}

pub struct LiveView {
    /// Episode (and event) lines on stdout: line mode, not `--quiet`.
    lines: bool,
    /// A line per event, not only per episode.
    events_shown: bool,
    /// The status line on stderr (line mode).
    status_shown: bool,
    budget: LineBudget,
    started: Instant,
    last_status: Instant,
    pub events: u64,
    /// Appended to the status line (e.g. drop counts per netns and reason).
    pub extra: Option<String>,
}

impl LiveView {
    /// Line mode.
    pub fn plain(events_shown: bool, quiet: bool, lines_per_sec: u32) -> Self {
        Self::new(!quiet, events_shown, true, lines_per_sec)
    }

    /// Counts only (the live view draws instead).
    pub fn silent() -> Self {
        Self::new(false, false, false, 1)
    }

    fn new(lines: bool, events_shown: bool, status_shown: bool, lines_per_sec: u32) -> Self {
        let now = Instant::now();
        Self {
            lines,
            events_shown,
            status_shown,
            budget: LineBudget::new(lines_per_sec),
            started: now,
            last_status: now,
            events: 0,
            extra: None,
        }
    }

    pub fn event(&mut self, record: &Record) {
        self.events += 1;
        if !self.lines || !self.events_shown {
            return;
        }
        let now = Instant::now();
        self.report_skipped(now, false);
        if self.budget.admit(now) {
            println!("{}", printable(&line(record)));
        }
    }

    pub fn episode(&mut self, episode: &Episode) {
        if self.lines {
            println!("{}", episode_line(episode));
        }
    }

    fn report_skipped(&mut self, now: Instant, end: bool) {
        if let Some(n) = self.budget.report(now, end) {
            println!(
                "observer: skipped {n} event lines (over {} a second; the events file has every event)",
                self.budget.per_sec
            );
        }
    }

    /// Called about once a second.
    pub fn status(&mut self, lost: u64) {
        if self.lines {
            self.report_skipped(Instant::now(), false);
        }
        if !self.status_shown || self.last_status.elapsed() < STATUS_EVERY {
            return;
        }
        self.last_status = Instant::now();
        crate::view::console::line(&self.status_text(lost));
    }

    pub fn status_text(&self, lost: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { self.events as f64 / secs } else { 0.0 };
        let extra = self.extra.as_deref().map(|e| format!(" {e}")).unwrap_or_default();
        format!("observer: {:.0}s events={} lost={} rate={rate:.1}/s{extra}", secs, self.events, lost)
    }

    /// At stop: the last skipped count.
    pub fn finish(&mut self) {
        if self.lines {
            self.report_skipped(Instant::now(), true);
        }
    }

    /// ` event_lines_skipped=N` with `--events` in line mode.
    pub fn skipped_text(&self) -> String {
        if self.lines && self.events_shown {
            format!(" event_lines_skipped={}", self.budget.skipped)
        } else {
            String::new()
        }
    }
}

/// `17:00:05 memory.pressure api (pid 4242) 12.3s memory_events.high=208 go.gc=31 closed by oom_kill`
pub fn episode_line(e: &Episode) -> String {
    let end = crate::kernel::clock::rfc3339(e.end_unix_nano);
    let clock = end.get(11..19).unwrap_or(&end);
    // The name and path come from the workload (its environment, its cgroup).
    let name = printable(&e.workload.service_name);
    let who = match (&e.workload.pid, &e.workload.cgroup_path) {
        (Some(pid), _) => format!("{name} (pid {pid})"),
        (None, Some(path)) => format!("{name} ({})", printable(path)),
        (None, None) => name,
    };
    let secs = e.end_unix_nano.saturating_sub(e.start_unix_nano) as f64 / 1e9;
    let counts: Vec<String> = e.counts.iter().map(|(signal, n)| format!("{}={n}", signal.name())).collect();
    format!("{clock} {} {who} {secs:.1}s {} closed by {}", e.kind.name(), counts.join(" "), e.closed_by.name())
}

/// Text a workload chose, safe for a terminal: control characters (escape
/// sequences among them) are written as `\u{1b}`-style escapes.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect()
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
        Event::NetDrop(d) => {
            let mut s = format!("{clock} net.drop  {} {}", d.reason, d.family);
            if let (Some(src), Some(dst)) = (d.src_addr, d.dst_addr) {
                s += &format!(
                    " {} -> {}",
                    endpoint(src, d.src_port.unwrap_or(0)),
                    endpoint(dst, d.dst_port.unwrap_or(0))
                );
            }
            if let Some(flags) = &d.tcp_flags {
                s += &format!(" [{}]", flags.join(","));
            }
            if let Some(loc) = &d.location {
                s += &format!(" at {loc}");
            }
            s + &net_owner(d.netns, d.netns_owner.as_ref(), &d.who)
        }
        Event::NetDropSummary(d) => {
            let s = format!("{clock} net.drop.summary {} {} +{} (total {})", d.reason, d.flags_class, d.count, d.total);
            s + &net_owner(d.netns, d.netns_owner.as_ref(), &Attribution::default())
        }
        Event::TcpRetransmit(r) => {
            let mut s = format!(
                "{clock} tcp.retransmit {} {} -> {} segs={}",
                r.family,
                endpoint(r.local_addr, r.local_port),
                endpoint(r.remote_addr, r.remote_port),
                r.segs
            );
            if let Some(state) = r.state {
                s += &format!(" {state}");
            }
            s + &net_owner(r.netns, r.netns_owner.as_ref(), &r.who)
        }
        Event::MemcgEvents(m) => {
            let d = &m.delta;
            let mut s = format!(
                "{clock} memcg.events {} high+{} max+{} oom+{} oom_kill+{} low+{}",
                m.who.cgroup_path.as_deref().unwrap_or("?"),
                d.high,
                d.max,
                d.oom,
                d.oom_kill,
                d.low
            );
            if let Some(current) = m.limits.memory_current {
                s += &format!(" current={current}");
            }
            s
        }
        Event::MemcgThrottle(t) => {
            let took = t.duration_ns.map_or_else(|| "?".to_string(), millis);
            let pages = t.nr_pages.map_or_else(|| "?".to_string(), |n| n.to_string());
            format!("{clock} memcg.throttle {took} pages_over={pages} via {}", t.mechanism) + &memcg_task(&t.who)
        }
        Event::MemcgThrottleIdle(t) => {
            format!("{clock} memcg.throttle.idle +{} (total {})", t.count, t.total) + &memcg_task(&t.who)
        }
        Event::MemcgReclaim(r) => {
            let took = r.duration_ns.map_or_else(|| "?".to_string(), millis);
            format!("{clock} memcg.reclaim {took} reclaimed={} pages", r.nr_reclaimed) + &memcg_task(&r.who)
        }
        Event::MemcgReclaimStat(r) => format!(
            "{clock} memcg.reclaim.stat {} pgscan+{} pgsteal+{} (direct +{}/+{}, kswapd +{}/+{})",
            r.who.cgroup_path.as_deref().unwrap_or("?"),
            r.delta.pgscan,
            r.delta.pgsteal,
            r.delta.pgscan_direct,
            r.delta.pgsteal_direct,
            r.delta.pgscan_kswapd,
            r.delta.pgsteal_kswapd
        ),
        Event::MemcgPressure(p) => format!(
            "{clock} memcg.pressure {} some+{} us full+{} us avg10={:.2}/{:.2}",
            p.who.cgroup_path.as_deref().unwrap_or("?"),
            p.some_delta_us,
            p.full_delta_us,
            p.some_avg10,
            p.full_avg10
        ),
        Event::MemcgOomKill(o) => format!(
            "{clock} memcg.oom_kill pid={} ({}) cgroup={} by pid={} ({})",
            o.who.pid.unwrap_or(0),
            o.who.comm.as_deref().unwrap_or("?"),
            o.who.cgroup_path.as_deref().unwrap_or("?"),
            o.trigger_pid,
            o.trigger_comm
        ),
        Event::GoGc(g) => {
            let cycle = g.cycle.map_or_else(|| "?".to_string(), |c| c.to_string());
            let mut s = format!("{clock} go.gc     cycle={cycle}{}", go_version(&g.owner));
            if let (Some(a), Some(b), Some(c)) = (g.heap_start_bytes, g.heap_end_bytes, g.heap_marked_bytes) {
                s += &format!(" heap={}->{}->{} MiB", a >> 20, b >> 20, c >> 20);
            }
            if let Some(goal) = g.heap_goal_bytes {
                s += &format!(" goal={} MiB", goal >> 20);
            }
            if let (Some(st), Some(m), Some(mt)) = (g.sweep_termination_ns, g.mark_ns, g.mark_termination_ns) {
                s += &format!(" clock={:.3}+{:.3}+{:.3} ms", ms(st), ms(m), ms(mt));
            }
            if let Some(gogc) = g.gogc {
                s += &(if gogc < 0 { " gogc=off".to_string() } else { format!(" gogc={gogc}") });
            }
            if let Some(limit) = g.memory_limit_bytes.filter(|&l| l != i64::MAX) {
                s += &format!(" memlimit={} MiB", limit >> 20);
            }
            s + &go_owner(&g.owner)
        }
        Event::GoAssist(a) => {
            let took = a.duration_ns.map_or_else(|| "?".to_string(), |d| format!("{:.3} ms", ms(d)));
            format!("{clock} go.assist {took}{}", go_version(&a.owner)) + &go_owner(&a.owner)
        }
        Event::GoHeapGrow(h) => {
            format!("{clock} go.heap_grow +{} KiB{}", h.bytes >> 10, go_version(&h.owner)) + &go_owner(&h.owner)
        }
        Event::GoScavenge(h) => {
            format!("{clock} go.scavenge -{} KiB{}", h.bytes >> 10, go_version(&h.owner)) + &go_owner(&h.owner)
        }
        Event::GoScavengeSummary(s) => {
            format!("{clock} go.scavenge.summary -{} KiB in {} calls{}", s.bytes >> 10, s.calls, go_version(&s.owner))
                + &go_owner(&s.owner)
        }
        Event::GoAttach(a) => {
            let mut s = format!(
                "{clock} go.attach{} {} layout={} probes={}",
                go_version(&a.owner),
                a.executable.as_deref().unwrap_or("?"),
                a.layout,
                a.probes
            );
            let env = &a.env;
            for (name, value) in
                [("GOGC", &env.env_gogc), ("GOMEMLIMIT", &env.env_gomemlimit), ("GODEBUG", &env.env_godebug)]
            {
                if let Some(v) = value {
                    s += &format!(" {name}={v}");
                }
            }
            if let Some(why) = &env.environ_error {
                s += &format!(" environ unreadable ({why})");
            } else if env.environ == crate::process::environ::EnvironRead::Truncated {
                s += " environ truncated";
            }
            s + &go_owner(&a.owner)
        }
    }
}

fn go_version(owner: &GoOwner) -> String {
    format!(" {}", owner.go_version.as_deref().unwrap_or("go?"))
}

/// ` cgroup=… pid=N (comm)` of a Go event.
fn go_owner(owner: &GoOwner) -> String {
    let who = &owner.who;
    let mut s = String::new();
    if let Some(path) = &who.cgroup_path {
        s += &format!(" cgroup={path}");
    }
    if let Some(pid) = who.pid {
        s += &format!(" pid={pid} ({})", who.comm.as_deref().unwrap_or("?"));
    }
    s
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// ` netns=… (name) cgroup=…`: where a network event happened and whose it is.
fn net_owner(netns: u32, owner: Option<&NetnsOwner>, who: &Attribution) -> String {
    let mut s = format!(" netns={netns}");
    if let Some(o) = owner {
        if let Some(name) = &o.name {
            s += &format!(" ({name})");
        }
        if let Some(pod) = o.k8s_pod_uids.first() {
            s += &format!(" pod={pod}");
        } else if let Some(path) = o.cgroup_paths.first() {
            s += &format!(" ns_cgroup={path}");
        }
        if let (Some(pid), Some(comm)) = (o.pids.first(), &o.comm) {
            s += &format!(" ns_pid={pid} ({comm})");
        }
    }
    match (&who.cgroup_path, who.cgroup_id) {
        (Some(path), _) => s += &format!(" cgroup={path}"),
        (None, Some(id)) => s += &format!(" cgroup_id={id}"),
        _ => {}
    }
    s
}

fn endpoint(addr: std::net::IpAddr, port: u16) -> String {
    match addr {
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// ` cgroup=… pid=N (comm)` of a memcg event about a task.
fn memcg_task(who: &Attribution) -> String {
    let mut s = format!(" cgroup={}", who.cgroup_path.as_deref().unwrap_or("?"));
    if let Some(pid) = who.pid {
        s += &format!(" pid={pid} ({})", who.comm.as_deref().unwrap_or("?"));
    }
    s
}

fn millis(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_are_rate_limited_and_the_rest_counted() {
        let t0 = Instant::now();
        let mut b = LineBudget::new(3);
        let admitted = (0..10).filter(|_| b.admit(t0)).count();
        assert_eq!((admitted, b.skipped), (3, 7));
        assert_eq!(b.report(t0 + Duration::from_millis(500), false), None, "its second is not over");
        assert_eq!(b.report(t0 + Duration::from_secs(1), false), Some(7));
        assert_eq!(b.report(t0 + Duration::from_secs(1), false), None, "reported once");
        assert!(b.admit(t0 + Duration::from_secs(1)), "a new second");
        assert!(!b.admit(t0 + Duration::from_secs(1)) || b.skipped == 7);
        for _ in 0..5 {
            b.admit(t0 + Duration::from_millis(1500));
        }
        assert_eq!(b.report(t0 + Duration::from_millis(1600), true), Some(b.skipped - 7), "the end reports the rest");
    }

    #[test]
    fn an_event_line_is_escaped_whole() {
        let mut records = crate::export::otlp::testdata::one_record_of_every_kind();
        for r in &mut records {
            if let Event::TcpReset(t) = &mut r.event {
                t.who.comm = Some("a\u{1b}[31mb".into());
                t.who.cgroup_path = Some("/x\u{7}".into());
            }
        }
        for r in &records {
            let l = printable(&line(r));
            assert!(!l.chars().any(char::is_control), "{l:?}");
        }
        let reset = records.iter().find(|r| matches!(r.event, Event::TcpReset(_))).unwrap();
        assert!(printable(&line(reset)).contains("(a\\u{1b}[31mb)"));
    }

    #[test]
    fn a_workloads_own_text_cannot_drive_the_terminal() {
        assert_eq!(printable("api\u{1b}[2J\r\nx"), "api\\u{1b}[2J\\u{d}\\u{a}x");
        assert_eq!(printable("checkout-ünïcode"), "checkout-ünïcode");
    }
}
