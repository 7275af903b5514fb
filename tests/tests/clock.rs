//! The agent's wall clock: kernel timestamps (CLOCK_MONOTONIC) mapped to
//! wall-clock time (`observer/src/kernel/clock.rs`).
//!
//! - Over a run of several of the agent's re-reads of the offset, every
//!   reset's time lies between CLOCK_REALTIME read just before and just
//!   after the burst that caused it, each burst's resets all in its window.
//! - When the agent's own CLOCK_REALTIME is stepped (an LD_PRELOAD shim,
//!   `tests/clockshift/clockshift.c`; the machine's clock is never touched),
//!   its events follow: a step forward at once, a small step back slewed
//!   (times stay ahead of the new offset and come down at half speed), and
//!   its stop line counts one of each.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use observer_e2e::episodes::{NetnsHolder, closed_port, closed_port_burst, unique_service};
use observer_e2e::netns::Netns;
use observer_e2e::observer::{Observer, Stopped, TcpReset, summary_field};
use observer_e2e::require::{require_root_and_bin, skip};

/// Resets per burst (each is one sent and one received: 2N events).
const N: usize = 5;
/// Slack on each side of a window: the agent's reading of the offset is
/// good to tens of µs.
const SLACK_NS: i128 = 1_000_000;
const S: i128 = 1_000_000_000;

fn realtime_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as i128
}

/// One burst and CLOCK_REALTIME read around it.
struct Round {
    start: i128,
    end: i128,
}

struct Bursts {
    ns: Netns,
    holder: NetnsHolder,
    port: u16,
}

impl Bursts {
    fn new(tag: &str) -> Bursts {
        let ns = Netns::create();
        let holder = NetnsHolder::start(&ns, &unique_service(tag));
        Bursts { ns, holder, port: closed_port(0) }
    }

    fn round(&self) -> Round {
        let start = realtime_ns();
        let resetgen = Path::new(env!("CARGO_BIN_EXE_resetgen"));
        closed_port_burst(resetgen, &self.ns, self.port, N, &self.holder.service_name);
        Round { start, end: realtime_ns() }
    }

    /// The resets of this namespace's bursts, in time order.
    fn resets(&self, stopped: &Stopped) -> Vec<TcpReset> {
        let mut resets: Vec<TcpReset> = stopped
            .tcp_resets()
            .into_iter()
            .filter(|r| r.netns == self.ns.inode() && (r.local_port == self.port || r.remote_port == self.port))
            .collect();
        resets.sort_by_key(|r| r.time_unix_nano);
        resets
    }
}

/// The resets inside `[low, high]` (± [`SLACK_NS`]).
fn within(resets: &[TcpReset], low: i128, high: i128) -> Vec<&TcpReset> {
    resets
        .iter()
        .filter(|r| {
            let t = i128::from(r.time_unix_nano);
            t >= low - SLACK_NS && t <= high + SLACK_NS
        })
        .collect()
}

fn times(resets: &[TcpReset]) -> Vec<String> {
    resets.iter().map(|r| r.time.clone()).collect()
}

#[test]
fn events_lie_between_the_realtime_reads_around_them() {
    let Some(bin) = require_root_and_bin() else { return };
    let bursts = Bursts::new("clock");
    let observer = Observer::start(&bin);
    let mut rounds = Vec::new();
    for _ in 0..4 {
        rounds.push(bursts.round());
        // Past the agent's next re-read of the offset (every second).
        sleep(Duration::from_millis(2500));
    }
    let stopped = observer.stop();
    let resets = bursts.resets(&stopped);
    assert_eq!(resets.len(), rounds.len() * 2 * N, "our resets in events.jsonl: {:?}", times(&resets));
    let mut worst = i128::MIN;
    for (i, r) in rounds.iter().enumerate() {
        let inside = within(&resets, r.start, r.end);
        assert_eq!(
            inside.len(),
            2 * N,
            "round {i}: resets inside CLOCK_REALTIME [{}, {}]; all: {:?}",
            r.start,
            r.end,
            times(&resets)
        );
        for reset in inside {
            let t = i128::from(reset.time_unix_nano);
            worst = worst.max(r.start - t).max(t - r.end);
        }
    }
    eprintln!(
        "clock: {} resets in {} windows of {:?} ms; furthest outside its window: {} ns (negative: inside)",
        resets.len(),
        rounds.len(),
        rounds.iter().map(|r| (r.end - r.start) / 1_000_000).collect::<Vec<_>>(),
        worst
    );
}

/// Builds the shim into `dir`; `None` (skipped) without a C compiler.
fn clockshift(dir: &Path) -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("clockshift/clockshift.c");
    let out = dir.join("clockshift.so");
    let status = Command::new("cc").args(["-shared", "-fPIC", "-O2", "-o"]).arg(&out).arg(&source).arg("-ldl").status();
    match status {
        Ok(s) if s.success() => Some(out),
        Ok(s) => panic!("cc {} failed: {s}", source.display()),
        Err(e) => skip(&format!("no C compiler for {} ({e})", source.display())),
    }
}

#[test]
fn a_step_of_the_agents_wall_clock_is_followed() {
    let Some(bin) = require_root_and_bin() else { return };
    let dir = tempfile::tempdir().expect("temporary directory");
    let Some(shim) = clockshift(dir.path()) else { return };
    let shift_file = dir.path().join("shift");
    let shift = |ns: i128| std::fs::write(&shift_file, ns.to_string()).expect("writing the shift");
    shift(0);
    let env: Vec<(String, OsString)> = vec![
        ("LD_PRELOAD".into(), shim.into_os_string()),
        ("OBSERVER_TEST_CLOCK_SHIFT".into(), shift_file.clone().into_os_string()),
    ];
    let bursts = Bursts::new("clockstep");
    let mut observer = Observer::start_env(&bin, &[], &env);

    let before = bursts.round();
    let forward = 5 * S;
    shift(forward);
    observer.wait_for_stderr("wall clock stepped +5.0", Duration::from_secs(5));
    let stepped = bursts.round();

    let back = forward - 3 * S / 10;
    shift(back);
    observer.wait_for_stderr("wall clock slewing -0.3", Duration::from_secs(5));
    let seen_at = realtime_ns();
    let slewing = bursts.round();
    // Past the slew (0.6 s).
    sleep(Duration::from_secs(1));
    let slewed = bursts.round();
    let stopped = observer.stop();

    let resets = bursts.resets(&stopped);
    assert_eq!(resets.len(), 4 * 2 * N, "our resets in events.jsonl: {:?}", times(&resets));
    let check = |name: &str, low: i128, high: i128, count: usize| {
        let inside = within(&resets, low, high);
        assert_eq!(inside.len(), count, "{name}: resets inside [{low}, {high}]; all: {:?}", times(&resets));
    };
    check("before the step", before.start, before.end, 2 * N);
    check("after +5 s", stepped.start + forward, stepped.end + forward, 2 * N);
    // Slewing from +5 s down to +4.7 s at half speed, from (about) when the
    // agent said so: still above +5 s less half the time since then.
    let slew_floor = (forward - (slewing.end - seen_at + S / 10) / 2).max(back);
    check("while slewing", slewing.start + slew_floor, slewing.end + forward, 2 * N);
    check("after the slew", slewed.start + back, slewed.end + back, 2 * N);
    let (steps, slews) =
        (summary_field(&stopped.summary, "clock_steps"), summary_field(&stopped.summary, "clock_slews"));
    assert_eq!((steps, slews), (Some(1), Some(1)), "clock_steps=/clock_slews=: {}", stopped.summary);
    eprintln!("clock step: {}", stopped.summary);
}
