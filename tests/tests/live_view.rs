//! The live view in a real terminal (tmux), and line mode without one,
//! against independent truths while the tests cause real events:
//!
//! - a burst of resets in a fresh network namespace: the namespace's row
//!   counts `RST-SENT` == `nstat` `TcpOutRsts` and `RST-RECV` == the
//!   generator's ECONNREFUSED sockets;
//! - the Go fixture with `GODEBUG=gctrace=1` under a tight `GOMEMLIMIT`: its
//!   row's `GC` == the gctrace cycles, and the row lights up (`EPISODE
//!   memory`) while its memory episode is open;
//! - sorting and filtering change the screen as expected, the detail shows
//!   the burst's resets in time order, `q` exits 0 with the terminal as it
//!   was (cooked mode, main screen, cursor shown);
//! - `observer episodes` (as an unprivileged user, on a copy of the data
//!   directory) lists and shows the same episodes;
//! - line mode: no escape code at all, one line per event (exact counts)
//!   and per episode, the skipped lines counted;
//! - workload names carrying escape sequences are shown escaped.
//!
//! The names are the test's: the namespace's workload is named by
//! `OTEL_SERVICE_NAME` (with an OSC sequence and a BEL in it), the fixture
//! by its executable's file name (with an SGR sequence in it).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use observer_e2e::command::{output_within, wait_within};
use observer_e2e::episodes::{NetnsHolder, closed_port, closed_port_burst};
use observer_e2e::gofixture::{self, GoFixture, Toolchain, Variant, gctrace_cycles};
use observer_e2e::netns::Netns;
use observer_e2e::nstat::nstat;
use observer_e2e::require::require_root_and_bin;
use observer_e2e::tmux::{Tmux, cell, require_tmux, total, wait_for_file_line};

const N: usize = 10;
const WIDTH: u16 = 250;
const HEIGHT: u16 = 60;
const READY_WITHIN: Duration = Duration::from_secs(30);
const ATTACH_WITHIN: Duration = Duration::from_secs(15);
/// For a count to reach the screen: the next frame, or the next interval.
const SHOWN_WITHIN: Duration = Duration::from_secs(20);
/// A closed episode: the quiet period, the reorder window, a frame.
const CLOSED_WITHIN: Duration = Duration::from_secs(30);
const EXIT_WITHIN: Duration = Duration::from_secs(20);
/// The fixture's live heap near its limit: GC pressure, a memory episode.
const PRESSURE_WORK: &[&str] = &["-wait-stdin", "-live-mb", "32", "-allocs", "20000", "-alloc-size", "65536"];
const TIGHT_LIMIT: &str = "40MiB";
/// Only forced cycles: few, so that no event line is skipped.
const FORCED_WORK: &[&str] = &["-wait-stdin", "-forced-gcs", "20"];
const WORKLOAD_HEADER: &str = "WORKLOAD";

fn resetgen() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_resetgen"))
}

/// The test's names: `lv<pid>-rst` + an OSC title sequence and a BEL, and
/// `lv<pid>-go` + an SGR sequence; and how the agent shows each.
struct Names {
    tag: String,
    rst: String,
    rst_shown: String,
    go_file: String,
    go_shown: String,
}

fn names() -> Names {
    let tag = format!("lv{}", std::process::id());
    Names {
        rst: format!("{tag}-rst\u{1b}]0;pwned\u{7}"),
        rst_shown: format!("{tag}-rst\\u{{1b}}]0;pwned\\u{{7}}"),
        go_file: format!("{tag}-go\u{1b}[7m"),
        go_shown: format!("{tag}-go\\u{{1b}}[7m"),
        tag,
    }
}

/// A fresh namespace owned by a workload named `service`, and a burst of N
/// resets in it: (TcpOutRsts delta, ECONNREFUSED sockets).
fn burst(ns: &Netns, service: &str, port: u16) -> (u64, u64) {
    let before = nstat(ns, "TcpOutRsts");
    let report = closed_port_burst(resetgen(), ns, port, N, service);
    let sent = nstat(ns, "TcpOutRsts") - before;
    assert_eq!(sent, N as u64, "TcpOutRsts in {} for {N} closed-port connections", ns.name());
    let refused = report.sockets.iter().filter(|s| s.errno.as_deref() == Some("ECONNREFUSED")).count() as u64;
    assert_eq!(refused, N as u64, "ECONNREFUSED sockets of the generator: {:?}", report.sockets);
    (sent, refused)
}

/// The fixture, copied to a file named `name` (its workload's name).
fn fixture_named(dir: &Path, name: &str) -> PathBuf {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gofixtures");
    let built = gofixture::build(&cache, Toolchain::Release("go1.27.4"), Variant::Plain);
    let copy = dir.join(name);
    std::fs::copy(&built, &copy).unwrap_or_else(|e| panic!("copying {} to {copy:?}: {e}", built.display()));
    copy
}

fn line_index(screen: &str, needle: &str) -> usize {
    screen.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} on the screen:\n{screen}"))
}

/// The `+S.SSSSSSs` offsets of the detail's (or `episodes show`'s) timeline lines of `name`.
fn timeline<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.split_whitespace().nth(1) == Some(name)).collect()
}

fn offsets(lines: &[&str]) -> Vec<f64> {
    lines
        .iter()
        .map(|l| {
            let w = l.split_whitespace().next().unwrap();
            w.trim_end_matches('s').parse().unwrap_or_else(|e| panic!("offset {w:?} in {l:?}: {e}"))
        })
        .collect()
}

#[test]
fn live_view_shows_exact_counts_sorts_filters_details_and_quits() {
    let Some(bin) = require_root_and_bin() else { return };
    if require_tmux().is_none() {
        return;
    }
    let names = names();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let stderr = work.path().join("stderr");
    let exit = work.path().join("exit");
    let w = work.path().display();
    // The terminal's settings before and after: `q` must leave them as they
    // were. The pane's shell lives on (a dead pane has no cursor to read).
    let command = format!(
        "stty -g > {w}/stty.before; {bin} run --output-dir {out} --episode-quiet 3s --duration 10m 2> {stderr}; \
         echo $? > {exit}; stty -g > {w}/stty.after; exec sleep 600",
        bin = bin.display(),
        out = out.display(),
        stderr = stderr.display(),
        exit = exit.display(),
    );
    // The namespace and the process that names its workload, before the
    // agent starts (as a workload's own process would be).
    let ns = Netns::create();
    let _holder = NetnsHolder::start(&ns, &names.rst);
    let tmux = Tmux::start(&command, WIDTH, HEIGHT);
    wait_for_file_line(&stderr, "observer: ready", READY_WITHIN);
    tmux.wait_for("the workload table", SHOWN_WITHIN, |s| s.contains(WORKLOAD_HEADER) && s.contains("q quit"));

    // Only the test's workloads.
    tmux.keys(&["/"]);
    tmux.type_text(&names.tag);
    tmux.keys(&["Enter"]);
    tmux.wait_for("the filter in the title", SHOWN_WITHIN, |s| s.contains(&format!("filter \"{}\"", names.tag)));

    // Resets in the fresh namespace.
    let (sent, refused) = burst(&ns, &names.rst, closed_port(0));

    // The Go fixture under GC pressure.
    let fixture_bin = fixture_named(work.path(), &names.go_file);
    let mut fixture = GoFixture::start(
        &fixture_bin,
        PRESSURE_WORK,
        &[("GODEBUG", "gctrace=1"), ("GOMEMLIMIT", TIGHT_LIMIT), ("GOGC", "100")],
    );
    let pid = fixture.pid;
    wait_for_file_line(&stderr, &format!("observer: go: attached pid={pid} "), ATTACH_WITHIN);
    fixture.go();
    // Its row lights up while its memory episode is open.
    let lit = tmux.wait_for("the fixture's row in an episode", Duration::from_secs(90), |s| {
        cell(s, WORKLOAD_HEADER, &names.go_shown, "EPISODE").as_deref() == Some("memory")
    });
    let finished = fixture.finish(Duration::from_secs(120));
    let cycles = gctrace_cycles(&finished.stderr).len() as u64;
    assert!(cycles > 0, "no gctrace line:\n{}", finished.stderr);
    wait_for_file_line(&stderr, &format!("observer: go: detached pid={pid}"), Duration::from_secs(30));

    // Exact counts, once they stopped changing.
    let counts = |s: &str| {
        let get = |row: &str, col: &str| cell(s, WORKLOAD_HEADER, row, col).as_deref().and_then(total);
        (get(&names.go_shown, "GC"), get(&names.rst_shown, "RST-SENT"), get(&names.rst_shown, "RST-RECV"))
    };
    let want = (Some(cycles), Some(sent), Some(refused));
    tmux.wait_for("the truths' counts", SHOWN_WITHIN, |s| counts(s) == want);
    sleep(Duration::from_secs(2));
    let screen = tmux.screen();
    assert_eq!(
        counts(&screen),
        want,
        "(GC, RST-SENT, RST-RECV) on the screen vs (gctrace cycles, nstat TcpOutRsts, ECONNREFUSED); \
         when lit:\n{lit}\nnow:\n{screen}"
    );
    eprintln!(
        "live view: GC {cycles} == gctrace cycles, RST-SENT {sent} == nstat TcpOutRsts, RST-RECV {refused} == ECONNREFUSED"
    );
    // Had the OSC sequence reached the terminal raw, it would have set the pane's title.
    assert_ne!(tmux.display("#{pane_title}"), "pwned", "the workload's OSC sequence set the terminal's title");
    assert!(screen.contains(&names.rst_shown) && screen.contains(&names.go_shown), "names escaped:\n{screen}");
    assert!(screen.contains("workloads 2/"), "the filter leaves the test's two rows:\n{screen}");

    // Sorting: by GC the fixture comes first, by resets sent the namespace.
    tmux.keys(&["s"]);
    let by_gc = tmux.wait_for("sorted by GC", SHOWN_WITHIN, |s| s.contains("sort GC desc"));
    assert!(line_index(&by_gc, &names.go_shown) < line_index(&by_gc, &names.rst_shown), "by GC:\n{by_gc}");
    while !tmux.screen().contains("sort RST-SENT desc") {
        tmux.keys(&["s"]);
        assert!(!tmux.screen().contains("sort WORKLOAD"), "went round without RST-SENT");
    }
    let by_rst = tmux.wait_for("sorted by RST-SENT", SHOWN_WITHIN, |s| s.contains("sort RST-SENT desc"));
    assert!(line_index(&by_rst, &names.rst_shown) < line_index(&by_rst, &names.go_shown), "by RST-SENT:\n{by_rst}");
    tmux.keys(&["r"]);
    let reversed = tmux.wait_for("sorted ascending", SHOWN_WITHIN, |s| s.contains("sort RST-SENT asc"));
    assert!(line_index(&reversed, &names.go_shown) < line_index(&reversed, &names.rst_shown), "{reversed}");

    // Filtering by name: one row; by kind: only that kind of episode.
    tmux.keys(&["/", "C-u"]);
    tmux.type_text(&format!("name:{}-rst", names.tag));
    tmux.keys(&["Enter"]);
    let one = tmux.wait_for("one row", SHOWN_WITHIN, |s| s.contains("workloads 1/"));
    assert!(one.contains(&names.rst_shown) && !one.contains(&names.go_shown), "{one}");
    let episode_lines = |s: &str| -> Vec<String> {
        s.lines()
            .skip_while(|l| !l.starts_with("ID "))
            .skip(1)
            .take_while(|l| !l.starts_with("agent:"))
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    };
    let ours = episode_lines(&one);
    assert_eq!(ours.len(), 1, "the namespace's one burst:\n{one}");
    assert!(ours[0].contains("tcp.reset.burst") && ours[0].contains("tcp.reset.sent=10"), "{}", ours[0]);

    // The detail: the workload's episode, its resets in time order.
    tmux.keys(&["Enter"]);
    let detail = tmux.wait_for("the detail", SHOWN_WITHIN, |s| s.contains("timeline (") && s.contains("trace: "));
    assert!(detail.contains(&format!("tcp.reset.burst of {}", names.rst_shown)), "{detail}");
    assert!(detail.contains(&format!("counts: tcp.reset.received={refused} tcp.reset.sent={sent}")), "{detail}");
    assert!(detail.contains(&format!("trace: {}/traces.jsonl", out.display())), "{detail}");
    let resets = timeline(&detail, "tcp.reset");
    assert_eq!(resets.len() as u64, sent + refused, "tcp.reset children in the detail:\n{detail}");
    let at = offsets(&resets);
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "children out of time order: {at:?}\n{detail}");
    let sent_lines = resets.iter().filter(|l| l.contains("tcp.direction=sent")).count() as u64;
    assert_eq!(sent_lines, sent, "sent resets in the detail:\n{detail}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("the table again", SHOWN_WITHIN, |s| s.contains(WORKLOAD_HEADER));

    // Episodes by kind.
    tmux.keys(&["/", "C-u"]);
    tmux.type_text("kind:memory.pressure");
    tmux.keys(&["Enter"]);
    let kind = tmux.wait_for("memory episodes only", SHOWN_WITHIN, |s| s.contains("filter \"kind:memory.pressure\""));
    let listed = episode_lines(&kind);
    assert!(listed.iter().any(|l| l.contains(&names.go_shown)), "the fixture's memory episode:\n{kind}");
    assert!(listed.iter().all(|l| l.contains("memory.pressure")), "{kind}");

    // q: the agent stops, the terminal is as it was.
    tmux.keys(&["q"]);
    let deadline = Instant::now() + EXIT_WITHIN;
    while !exit.exists() && Instant::now() < deadline {
        sleep(Duration::from_millis(100));
    }
    let code = std::fs::read_to_string(&exit).unwrap_or_else(|_| panic!("no exit after q; screen:\n{}", tmux.screen()));
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(code.trim(), "0", "exit status after q; stderr:\n{err}");
    assert!(err.contains("observer: stopped"), "{err}");
    sleep(Duration::from_millis(300));
    let before = std::fs::read_to_string(work.path().join("stty.before")).unwrap();
    let after = std::fs::read_to_string(work.path().join("stty.after")).unwrap();
    assert_eq!(before, after, "terminal settings (stty -g) before the agent and after q");
    assert_eq!(tmux.display("#{alternate_on} #{cursor_flag}"), "0 1", "main screen, cursor shown");
    assert!(!err.contains('\u{1b}'), "a raw escape in the agent's stderr:\n{err}");

    episodes_afterwards(&bin, &out, &names, (sent, refused), &resets);
}

/// `observer episodes` as nobody, on a copy of the data directory.
fn episodes_afterwards(bin: &Path, out: &Path, names: &Names, (sent, refused): (u64, u64), detail: &[&str]) {
    let copy_root = tempfile::tempdir().unwrap();
    let open = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    open(copy_root.path(), 0o755);
    let copy = copy_root.path().join("from-another-machine");
    std::fs::create_dir(&copy).unwrap();
    open(&copy, 0o755);
    std::fs::copy(out.join("traces.jsonl"), copy.join("traces.jsonl")).unwrap();
    open(&copy.join("traces.jsonl"), 0o644);
    let agent = copy_root.path().join("observer");
    std::fs::copy(bin, &agent).unwrap();
    open(&agent, 0o755);
    let run = |args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&agent).arg("episodes").args(args);
        let o = output_within(&mut cmd, Duration::from_secs(30));
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let dir = copy.to_str().unwrap();
    let (code, list, err) = run(&["--dir", dir]);
    assert_eq!(code, Some(0), "observer episodes: {err}");
    assert!(list.starts_with("ID "), "{list}");
    let starts: Vec<&str> = list.lines().skip(1).map(|l| &l[18..37]).collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first:\n{list}");
    let (code, ours, err) = run(&["--dir", dir, "--name", &format!("{}-rst", names.tag)]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<&str> = ours.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "the namespace's one episode:\n{ours}");
    let row = rows[0];
    assert!(row.contains(&names.rst_shown) && row.contains("tcp.reset.burst"), "{row}");
    assert!(row.contains(&format!("tcp.reset.received={refused} tcp.reset.sent={sent}")), "{row}");
    assert!(!ours.contains('\u{1b}'), "{ours:?}");
    let (_, by_kind, _) = run(&["--dir", dir, "--kind", "memory.pressure"]);
    assert!(by_kind.lines().skip(1).all(|l| l.contains("memory.pressure")), "{by_kind}");
    assert!(by_kind.contains(&names.go_shown), "the fixture's memory episode:\n{by_kind}");

    let id = row.split_whitespace().next().unwrap();
    let (code, shown, err) = run(&["show", id, "--dir", dir]);
    assert_eq!(code, Some(0), "{err}");
    let shown_resets = timeline(&shown, "tcp.reset");
    assert_eq!(shown_resets.len(), detail.len(), "episodes show vs the detail view:\n{shown}");
    for (s, d) in shown_resets.iter().zip(detail) {
        assert!(s.starts_with(d.trim_end()), "episodes show and the detail differ:\n{s}\n{d}");
    }

    let (code, _, err) = run(&["show", "0000000000000000", "--dir", dir]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("observer: error: no episode 0000000000000000"), "{err}");
    let (code, _, err) = run(&["--dir", "/nonexistent/observer"]);
    assert_eq!((code, err.lines().count()), (Some(2), 1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `observer run` with stdout redirected, `--events`: `line_limit` event lines a second.
struct LineRun {
    child: std::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl LineRun {
    fn start(bin: &Path, line_limit: u32) -> LineRun {
        let dir = tempfile::tempdir().unwrap();
        let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let child = Command::new(bin)
            .arg("run")
            .arg("--output-dir")
            .arg(dir.path())
            .args(["--events", "--episode-quiet", "1s", "--duration", "10m"])
            .args(["--event-lines-per-sec", &line_limit.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        wait_for_file_line(&stderr, "observer: ready", READY_WITHIN);
        LineRun { child, stdout, stderr, _dir: dir }
    }

    /// SIGTERM, exit 0; (stdout, the stop line's `events=`).
    fn stop(mut self) -> (String, u64, String) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let status = wait_within(&mut self.child, EXIT_WITHIN).expect("agent exit after SIGTERM");
        let err = std::fs::read_to_string(&self.stderr).unwrap();
        assert!(status.success(), "{status}; stderr:\n{err}");
        let stop = err.lines().find(|l| l.contains("observer: stopped")).unwrap_or_else(|| panic!("{err}")).to_string();
        let events = observer_e2e::observer::parse_summary(&stop).unwrap().0;
        (std::fs::read_to_string(&self.stdout).unwrap(), events, stop)
    }
}

#[test]
fn line_mode_has_exact_counts_and_no_escape_codes() {
    let Some(bin) = require_root_and_bin() else { return };
    let names = names();
    let work = tempfile::tempdir().unwrap();
    let ns = Netns::create();
    let holder = NetnsHolder::start(&ns, &names.rst);
    let run = LineRun::start(&bin, 1_000_000);
    let (sent, refused) = burst(&ns, &names.rst, closed_port(2));
    let fixture_bin = fixture_named(work.path(), &names.go_file);
    let mut fixture = GoFixture::start(&fixture_bin, FORCED_WORK, &[("GODEBUG", "gctrace=1")]);
    let pid = fixture.pid;
    wait_for_file_line(&run.stderr, &format!("observer: go: attached pid={pid} "), ATTACH_WITHIN);
    fixture.go();
    let cycles = gctrace_cycles(&fixture.finish(Duration::from_secs(60)).stderr).len();
    wait_for_file_line(&run.stderr, &format!("observer: go: detached pid={pid}"), Duration::from_secs(30));
    wait_for_file_line(&run.stdout, &format!("tcp.reset.burst {}", names.rst_shown), CLOSED_WITHIN);
    let (stdout, events, stop) = run.stop();

    let control: Vec<char> = stdout.chars().filter(|c| c.is_control() && *c != '\n').collect();
    assert!(control.is_empty(), "control characters in line mode: {control:?}");
    assert!(stop.contains("event_lines_skipped=0"), "{stop}");
    let gc = stdout.lines().filter(|l| l.contains(" go.gc ") && l.contains(&format!(" pid={pid} "))).count();
    assert_eq!(gc, cycles, "go.gc lines of pid {pid} vs gctrace cycles");
    let netns = format!("netns={}", ns.inode());
    let resets = |dir: &str| {
        stdout.lines().filter(|l| l.contains(" tcp.reset ") && l.contains(dir) && l.contains(&netns)).count() as u64
    };
    assert_eq!((resets(" sent "), resets(" received ")), (sent, refused), "tcp.reset lines vs nstat / ECONNREFUSED");
    let episode: Vec<&str> =
        stdout.lines().filter(|l| l.contains(&format!("tcp.reset.burst {}", names.rst_shown))).collect();
    assert_eq!(episode.len(), 1, "{stdout}");
    for count in [format!("tcp.reset.sent={sent}"), format!("tcp.reset.received={refused}")] {
        assert!(episode[0].split_whitespace().any(|w| w == count), "{count} in {}", episode[0]);
    }
    assert!(
        stdout.contains(&format!("({})", names.go_shown)) || stdout.contains(&names.go_shown),
        "the fixture's name, escaped"
    );
    let printed = stdout.lines().filter(|l| !l.starts_with("observer: ") && !l.contains(" closed by ")).count() as u64;
    assert_eq!(printed, events, "one line per event (events= of {stop:?})");
    eprintln!(
        "line mode: go.gc lines {gc} == gctrace {cycles}; tcp.reset lines {sent}+{refused} == nstat/ECONNREFUSED; {printed} event lines == events={events}"
    );
    drop(holder);

    // A small budget: what is over it is counted, never lost from the count.
    let ns = Netns::create();
    let _holder = NetnsHolder::start(&ns, &names.rst);
    let run = LineRun::start(&bin, 3);
    burst(&ns, &names.rst, closed_port(3));
    sleep(Duration::from_secs(2));
    let (stdout, events, stop) = run.stop();
    let skipped_total: u64 = stop
        .split_whitespace()
        .find_map(|w| w.strip_prefix("event_lines_skipped=")?.parse().ok())
        .unwrap_or_else(|| panic!("{stop}"));
    let reported: u64 = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("observer: skipped ")?.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let printed = stdout.lines().filter(|l| !l.starts_with("observer: ") && !l.contains(" closed by ")).count() as u64;
    assert!(skipped_total > 0, "{N} resets in a burst and a budget of 3 a second skip some: {stop}");
    assert_eq!(reported, skipped_total, "the skipped lines' counts vs the stop line:\n{stdout}");
    assert_eq!(printed + skipped_total, events, "printed + skipped vs events= ({stop})");
    eprintln!("line mode, 3 lines/s: printed {printed} + skipped {skipped_total} == events={events}");
}

#[test]
fn forced_live_view_without_a_terminal_is_one_clear_error() {
    let Some(bin) = observer_e2e::require::require_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&bin);
    cmd.arg("run").arg("--output-dir").arg(dir.path()).args(["--output", "tui", "--duration", "1s"]);
    let out = output_within(&mut cmd, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--output tui needs a terminal"), "{err}");
}
