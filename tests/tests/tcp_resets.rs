//! TCP resets: the agent's `tcp.reset` events against the kernel's own count
//! of resets sent (`nstat` `TcpOutRsts`) and against the errors the reset
//! generator's sockets saw.
//!
//! Each case makes N resets of one kind, over IPv4 or IPv6, either on
//! loopback inside one fresh namespace or across a veth pair between two
//! fresh namespaces. The agent sees the whole machine, so only events of the
//! case's own namespaces are counted (other traffic on the host does cause
//! resets in the host namespace).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use observer_e2e::cgroup;
use observer_e2e::netns::{Netns, VethPair};
use observer_e2e::nstat::nstat;
use observer_e2e::observer::{Observer, TcpReset};
use observer_e2e::require::require_root_and_bin;
use observer_e2e::resetgen::{Kind, Report, Server, run_client};
use observer_e2e::tracefs::TraceInstance;
use rstest::rstest;

const N: usize = 10;
/// The generator's server listens here; nobody listens on `CLOSED_PORT`.
const PORT: u16 = 7000;
const CLOSED_PORT: u16 = 7001;

#[derive(Clone, Copy, Debug)]
enum Family {
    V4,
    V6,
}

#[derive(Clone, Copy, Debug)]
enum Topology {
    /// Client and server on loopback in one fresh namespace.
    Loopback,
    /// Client in one fresh namespace, server in another, joined by a veth pair.
    Veth,
}

/// The tracepoints the agent uses for resets: its choice (`tp_btf` where the
/// kernel has it), or the classic ones, forced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mechanism {
    Chosen,
    Classic,
}

#[rstest]
#[case::closed_port_ipv4_loopback(Kind::ClosedPort, Family::V4, Topology::Loopback)]
#[case::closed_port_ipv6_loopback(Kind::ClosedPort, Family::V6, Topology::Loopback)]
#[case::closed_port_ipv4_veth(Kind::ClosedPort, Family::V4, Topology::Veth)]
#[case::closed_port_ipv6_veth(Kind::ClosedPort, Family::V6, Topology::Veth)]
#[case::linger_ipv4_loopback(Kind::Linger, Family::V4, Topology::Loopback)]
#[case::linger_ipv6_loopback(Kind::Linger, Family::V6, Topology::Loopback)]
#[case::linger_ipv4_veth(Kind::Linger, Family::V4, Topology::Veth)]
#[case::linger_ipv6_veth(Kind::Linger, Family::V6, Topology::Veth)]
#[case::data_after_close_ipv4_loopback(Kind::DataAfterClose, Family::V4, Topology::Loopback)]
#[case::data_after_close_ipv6_loopback(Kind::DataAfterClose, Family::V6, Topology::Loopback)]
#[case::data_after_close_ipv4_veth(Kind::DataAfterClose, Family::V4, Topology::Veth)]
#[case::data_after_close_ipv6_veth(Kind::DataAfterClose, Family::V6, Topology::Veth)]
fn tcp_resets(
    #[case] kind: Kind,
    #[case] family: Family,
    #[case] topology: Topology,
    #[values(Mechanism::Chosen, Mechanism::Classic)] mechanism: Mechanism,
) {
    let Some(bin) = require_root_and_bin() else {
        return;
    };
    let net = Net::new(family, topology);
    // Who sends the RST and who receives it.
    let (sender, receiver) =
        if kind.client_sends() { (net.client(), net.server()) } else { (net.server(), net.client()) };
    let rsts = || (nstat(sender, "TcpOutRsts"), nstat(receiver, "TcpOutRsts"));

    let before = rsts();
    let env = match mechanism {
        Mechanism::Chosen => vec![],
        Mechanism::Classic => vec![("OBSERVER_CLASSIC_TRACEPOINTS".to_string(), "1".into())],
    };
    let observer = Observer::start_env(&bin, &[], &env);
    if mechanism == Mechanism::Classic {
        let ready = observer.stderr_seen().iter().find(|l| l.contains("observer: ready")).cloned();
        assert!(ready.is_some_and(|r| r.contains("tracepoint tcp:tcp_send_reset (tp_btf: OBSERVER_CLASSIC")));
    }
    // The kernel's own record of the resets sent, for their reasons.
    let trace = TraceInstance::new("resets", "tcp", "tcp_send_reset", "0");
    let (client, server) = generate(kind, &net);
    let after = rsts();
    let traced = trace.stop();
    let stopped = observer.stop();

    // The kernel's truth and the generator's own view first.
    let sent_truth = after.0 - before.0;
    assert_eq!(sent_truth, N as u64, "TcpOutRsts in the sending namespace");
    if sender.inode() != receiver.inode() {
        assert_eq!(after.1 - before.1, 0, "TcpOutRsts in the receiving namespace");
    }
    let receiver_report = if kind.client_sends() { server.as_ref().expect("linger has a server") } else { &client };
    let errnos: Vec<_> = receiver_report.sockets.iter().map(|s| s.errno.as_deref().unwrap_or("none")).collect();
    assert_eq!(errnos, vec![kind.receiver_errno(); N], "errors the receiving sockets saw");
    if let Some(server) = &server {
        let from_client: BTreeSet<_> = client.sockets.iter().map(|s| (s.local, s.remote)).collect();
        let from_server: BTreeSet<_> = server.sockets.iter().map(|s| (s.remote, s.local)).collect();
        assert_eq!(from_client, from_server, "client and server describe the same connections");
    }

    // Then the agent.
    assert_eq!(stopped.lost, 0, "events lost by the agent");
    assert_eq!(stopped.summary_events as usize, stopped.events.len(), "summary events= vs lines of events.jsonl");
    let ours: Vec<TcpReset> =
        stopped.tcp_resets().into_iter().filter(|e| e.netns == sender.inode() || e.netns == receiver.inode()).collect();
    let count =
        |direction: &str, ns: &Netns| ours.iter().filter(|e| e.direction == direction && e.netns == ns.inode()).count();
    assert_eq!(count("sent", sender) as u64, sent_truth, "sent events vs TcpOutRsts; events:\n{}", show(&ours));
    assert_eq!(count("received", receiver), errnos.len(), "received events vs errors seen; events:\n{}", show(&ours));

    // Each event is one of the resets made, seen from the right socket:
    // sent: local = the RST's sender; received: local = the socket hit by it.
    let mut expected = Vec::new();
    for s in &client.sockets {
        let (from, to) = if kind.client_sends() { (s.local, s.remote) } else { (s.remote, s.local) };
        expected.push(("sent".to_string(), sender.inode(), from, to));
        expected.push(("received".to_string(), receiver.inode(), to, from));
    }
    let mut seen: Vec<_> = ours.iter().map(|e| (e.direction.clone(), e.netns, e.local(), e.remote())).collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected, "events (direction, netns, local, remote) vs the generator's sockets");

    // Reasons (6.10+): the same as the kernel's record of this case's resets.
    let port = if kind == Kind::ClosedPort { CLOSED_PORT } else { PORT };
    let mut traced_reasons: Vec<String> = traced
        .iter()
        .filter(|l| l.contains(&format!(":{port} ")))
        .filter_map(|l| Some(l.split(" reason=").nth(1)?.split_whitespace().next()?.to_string()))
        .collect();
    let mut reasons: Vec<String> =
        ours.iter().filter(|e| e.direction == "sent").filter_map(|e| e.reason.clone()).collect();
    let format = observer_e2e::tracefs::root().join("events/tcp/tcp_send_reset/format");
    if std::fs::read_to_string(&format).expect("the tracepoint's format").contains("reason") {
        assert_eq!(traced_reasons.len() as u64, sent_truth, "traced resets with a reason:\n{}", traced.join("\n"));
    }
    traced_reasons.sort();
    reasons.sort();
    assert_eq!(reasons, traced_reasons, "reasons of the sent resets vs tracefs's record:\n{}", traced.join("\n"));

    let family_name = match family {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    };
    let receiver_state = match kind {
        Kind::ClosedPort => "TCP_SYN_SENT",
        Kind::Linger => "TCP_ESTABLISHED",
        Kind::DataAfterClose => "TCP_CLOSE_WAIT",
    };
    // We may not create cgroups on this host, so every test process (client,
    // server, the test itself) shares one cgroup: this checks the id is the
    // socket owner's v2 id, but cannot tell the owner from another process.
    assert_eq!(client.cgroup, receiver_report.cgroup, "generator processes share a cgroup");
    let owner_cgroup = cgroup::id_of_path(&client.cgroup);
    for e in &ours {
        assert_eq!(e.family, family_name, "family of {e:?}");
        // A full socket is there for every received reset and for the
        // client's linger close; its cgroup is the owner's, not `current`'s.
        if e.direction == "received" || kind.client_sends() {
            assert_eq!(e.cgroup_source, "socket", "cgroup source of {e:?}");
        }
        match e.cgroup_source.as_str() {
            "socket" => {
                assert_eq!(e.cgroup_id, Some(owner_cgroup), "cgroup id of {e:?} (generator in {})", client.cgroup)
            }
            // No full socket (closed port, time-wait): no cgroup, no task.
            "none" => assert!(e.cgroup_id.is_none() && e.pid.is_none(), "{e:?}"),
            other => panic!("unexpected cgroup_source {other} in {e:?}"),
        }
        // The client closes its own linger socket in process context.
        if kind.client_sends() && e.direction == "sent" {
            assert_eq!(e.pid, Some(client.pid), "pid of the linger close {e:?}");
        }
        if e.direction == "received" {
            assert_eq!(e.state.as_deref(), Some(receiver_state), "state of {e:?}");
        }
    }
}

/// The namespaces of one case and the addresses the client and server use.
struct Net {
    client_ns: Netns,
    /// `None` on loopback: the server shares the client's namespace.
    server_ns: Option<Netns>,
    client_ip: IpAddr,
    server_ip: IpAddr,
}

impl Net {
    fn new(family: Family, topology: Topology) -> Net {
        let client_ns = Netns::create();
        match topology {
            Topology::Loopback => {
                let lo: IpAddr = match family {
                    Family::V4 => "127.0.0.1".parse().unwrap(),
                    Family::V6 => "::1".parse().unwrap(),
                };
                Net { client_ns, server_ns: None, client_ip: lo, server_ip: lo }
            }
            Topology::Veth => {
                let server_ns = Netns::create();
                let veth = VethPair::new(&client_ns, &server_ns, 1);
                let (client_ip, server_ip) = match family {
                    Family::V4 => (veth.a_v4, veth.b_v4),
                    Family::V6 => (veth.a_v6, veth.b_v6),
                };
                Net { client_ns, server_ns: Some(server_ns), client_ip, server_ip }
            }
        }
    }

    fn client(&self) -> &Netns {
        &self.client_ns
    }

    fn server(&self) -> &Netns {
        self.server_ns.as_ref().unwrap_or(&self.client_ns)
    }
}

/// Runs the generator: a server (unless the port is to be closed) in the
/// server's namespace, and a client making N connections in the client's.
fn generate(kind: Kind, net: &Net) -> (Report, Option<Report>) {
    let resetgen = Path::new(env!("CARGO_BIN_EXE_resetgen"));
    let count = N.to_string();
    let port = if kind == Kind::ClosedPort { CLOSED_PORT } else { PORT };
    let target = SocketAddr::new(net.server_ip, port).to_string();
    let server = (kind != Kind::ClosedPort).then(|| {
        Server::start(net.server().exec(resetgen).args([
            "server",
            "--listen",
            &target,
            "--mode",
            kind.as_str(),
            "--count",
            &count,
        ]))
    });
    let bind = net.client_ip.to_string();
    let client = run_client(net.client().exec(resetgen).args([
        "client",
        "--bind",
        &bind,
        "--connect",
        &target,
        "--kind",
        kind.as_str(),
        "--count",
        &count,
    ]));
    (client, server.map(Server::finish))
}

fn show(events: &[TcpReset]) -> String {
    events.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join("\n")
}
