//! A clean stop: on SIGTERM (or SIGINT) the agent closes the episode still open, writes
//! it to its own `traces.jsonl`, gives the collector what is left of its
//! stop deadline (`STOP_WITHIN`, 5 s, in `observer/src/agent.rs`) and exits
//! 0, whatever the collector does: one that answers (the episode arrives),
//! a listener that accepts and never answers, a collector SIGSTOPped. Its
//! stop line says how many episodes it closed, flushed and dropped, and how
//! long the stop took.

use std::ffi::OsString;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use observer_e2e::collector::{Collector, Receiver, require_otelcol};
use observer_e2e::episodes::{
    CLOSE_REASON, COUNT_RESET_SENT, NetnsHolder, TCP_RESET_BURST, closed_port, closed_port_burst, episodes_of, show,
    unique_service,
};
use observer_e2e::netns::Netns;
use observer_e2e::nstat::nstat;
use observer_e2e::observer::{Observer, Stopped, summary_field};
use observer_e2e::require::require_root_and_bin;
use rstest::rstest;

/// The agent's own bound, from the signal to its stop line.
const STOP_WITHIN: Duration = Duration::from_secs(5);
/// Past the stop line: the runtime's shutdown, the exit itself (which waits
/// for the kernel to close what was not detached by the deadline: seconds
/// on a loaded machine) and our 20 ms polling for it. Generous: it tells a
/// hang from a stop, the bound itself is the agent's `stop_ms`.
const EXIT_MARGIN: Duration = Duration::from_secs(10);
/// Resets in the burst whose episode is open at stop.
const N: usize = 10;

/// Where the agent exports to.
#[derive(Debug, Clone, Copy)]
enum Sink {
    /// A real collector that answers.
    Collector,
    /// A loopback listener that accepts connections and never reads or answers.
    Silent(&'static str),
    /// A real collector, SIGSTOPped after it came up.
    StoppedCollector,
}

/// A TCP listener on loopback that accepts and holds every connection,
/// never reading or writing; ends with the test process.
fn silent_listener() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let addr = listener.local_addr().expect("its address");
    thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    format!("http://{addr}")
}

fn field(stopped: &Stopped, key: &str) -> u64 {
    summary_field(&stopped.summary, key).unwrap_or_else(|| panic!("no {key}= in the stop line {:?}", stopped.summary))
}

/// Waits until `events.jsonl` holds `at_least` resets to or from `port`.
fn wait_for_resets(dir: &Path, port: u16, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap_or_default();
        let seen = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["kind"] == "tcp.reset" && (e["local_port"] == port || e["remote_port"] == port))
            .count();
        if seen >= at_least {
            return;
        }
        assert!(Instant::now() < deadline, "{seen} of {at_least} resets on port {port} in events.jsonl after 20 s");
        sleep(Duration::from_millis(100));
    }
}

#[rstest]
#[case::collector(Sink::Collector, Signal::SIGTERM)]
#[case::silent_grpc(Sink::Silent("grpc"), Signal::SIGTERM)]
#[case::silent_http(Sink::Silent("http/protobuf"), Signal::SIGTERM)]
#[case::silent_grpc_sigint(Sink::Silent("grpc"), Signal::SIGINT)]
#[case::stopped_collector(Sink::StoppedCollector, Signal::SIGTERM)]
fn a_signal_closes_flushes_and_exits_in_time(#[case] sink: Sink, #[case] signal: Signal) {
    let Some(bin) = require_root_and_bin() else { return };
    let mut collector = None;
    let mut env: Vec<(String, OsString)> = match sink {
        Sink::Silent(protocol) => vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), silent_listener().into()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
        ],
        Sink::Collector | Sink::StoppedCollector => {
            if require_otelcol().is_none() {
                return;
            }
            let c = Collector::start(Receiver::GRPC);
            let env = c.otlp_env();
            collector = Some(c);
            env
        }
    };
    // The exporter's own timeout outlasts the stop: only the agent's deadline ends it.
    env.push(("OTEL_EXPORTER_OTLP_TIMEOUT".into(), "30000".into()));
    let ns = Netns::create();
    let holder = NetnsHolder::start(&ns, &unique_service("stop"));
    // Quiet for longer than the test: the episode is open when the signal
    // comes. No Go process probed (the collector is one, and other tests'
    // fixtures may run): closing uprobe links is the kernel's time (about
    // 0.1 s a link on a busy machine, see `observer/src/kernel/closer.rs`),
    // which the agent's deadline does not bound; this test is about the
    // collector.
    let observer = Observer::start_env(&bin, &["--episode-quiet", "4m", "--go-process", "no-such-comm"], &env);
    if let (Sink::StoppedCollector, Some(c)) = (sink, &collector) {
        let pid = c.pid().expect("the collector runs");
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP to the collector");
    }
    let port = closed_port(0);
    let before = nstat(&ns, "TcpOutRsts");
    closed_port_burst(Path::new(env!("CARGO_BIN_EXE_resetgen")), &ns, port, N, &holder.service_name);
    let sent = nstat(&ns, "TcpOutRsts") - before;
    assert_eq!(sent, N as u64, "TcpOutRsts delta for {N} closed-port connections");
    wait_for_resets(observer.output_dir(), port, 2 * N);

    let stopped = observer.stop_with(signal);
    let (closed, flushed, unflushed, stop_ms) = (
        field(&stopped, "closed_at_stop"),
        field(&stopped, "flushed"),
        field(&stopped, "unflushed"),
        field(&stopped, "stop_ms"),
    );
    eprintln!("{sink:?}: exited {:?} after {signal}; {}", stopped.exited_after, stopped.summary);
    assert!(
        Duration::from_millis(stop_ms) <= STOP_WITHIN,
        "stop_ms={stop_ms} past the agent's {STOP_WITHIN:?}: {}",
        stopped.summary
    );
    assert!(
        stopped.exited_after <= STOP_WITHIN + EXIT_MARGIN,
        "exited {:?} after {signal} (stop_ms={stop_ms}); stderr:\n{}",
        stopped.exited_after,
        stopped.stderr.join("\n")
    );

    // Closed by the stop, and in the agent's own file whatever the collector did.
    assert!(closed >= 1, "closed_at_stop= with our episode open: {}", stopped.summary);
    let own = episodes_of(&stopped.traces, TCP_RESET_BURST, &holder.service_name);
    assert_eq!(own.len(), 1, "our episode in traces.jsonl:\n{}", show(&own));
    let root = &own[0].root().attributes;
    assert_eq!(root.str(CLOSE_REASON), Some("shutdown"), "{}", own[0].summary());
    assert_eq!(root.u64(COUNT_RESET_SENT), Some(sent), "{COUNT_RESET_SENT} vs TcpOutRsts; {}", own[0].summary());

    match sink {
        Sink::Collector => {
            assert_eq!(unflushed, 0, "unflushed= with a collector that answers: {}", stopped.summary);
            assert!(flushed >= 1, "flushed= with our episode delivered: {}", stopped.summary);
            let c = collector.as_mut().expect("the collector");
            let arrived = c.wait_for_traces(Duration::from_secs(10), |r| {
                !episodes_of(r, TCP_RESET_BURST, &holder.service_name).is_empty()
            });
            let arrived = episodes_of(&arrived, TCP_RESET_BURST, &holder.service_name);
            assert_eq!(arrived.len(), 1, "our episode in the collector:\n{}", show(&arrived));
            assert_eq!(arrived[0].root().attributes.str(CLOSE_REASON), Some("shutdown"));
        }
        Sink::Silent(_) | Sink::StoppedCollector => {
            assert_eq!(flushed, 0, "flushed= to a collector that never answers: {}", stopped.summary);
            assert!(unflushed >= 1, "unflushed= with our episode undelivered: {}", stopped.summary);
        }
    }
}
