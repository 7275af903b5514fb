//! Packet drops and retransmits: the agent's `net.drop` / `net.drop.summary`
//! and `tcp.retransmit` records against the kernel's own counts — the
//! nftables rule's counter, `nstat` `TcpRetransSegs`, and a tracefs instance
//! recording the same tracepoint.
//!
//! Traffic stays between namespaces the tests create; the agent sees the
//! whole machine, so only records of those namespaces are counted.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use observer_e2e::inns::in_netns;
use observer_e2e::netns::{Netns, VethPair};
use observer_e2e::nstat::nstat;
use observer_e2e::observer::Observer;
use observer_e2e::rawtcp::{self, RST};
use observer_e2e::require::require_root_and_bin;
use observer_e2e::scrape;
use observer_e2e::tracefs::{self, TraceInstance};
use observer_e2e::{command::wait_within, nft};
use serde_json::Value;

const N: usize = 10;
const STRAY_SPORT: u16 = 41000;
const STRAY_DPORT: u16 = 7300;
const CLOSED_PORT: u16 = 7399;

const CT_INVALID_DROP: &str = "table inet t {
  chain input { type filter hook input priority 0; ct state invalid counter drop; }
}";

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => panic!("{a} is not IPv4"),
    }
}

#[test]
fn dropped_stray_rsts_carry_the_netfilter_reason() {
    stray_rsts(Mechanism::TpBtf);
}

#[test]
fn dropped_stray_rsts_carry_the_netfilter_reason_with_the_classic_tracepoint() {
    stray_rsts(Mechanism::Classic);
}

fn stray_rsts(mechanism: Mechanism) {
    let Some(bin) = require_root_and_bin() else {
        return;
    };
    // `guarded` drops invalid packets; `peer` sends them.
    let guarded = Netns::create();
    let peer = Netns::create();
    let veth = VethPair::new(&guarded, &peer, 31);
    nft::load(&guarded, CT_INVALID_DROP);
    // A process living in the guarded namespace: its owner, as a pod's would be.
    let mut resident =
        guarded.exec("sleep").arg("60").stdin(Stdio::null()).spawn().expect("spawn a process in the namespace");

    let observer = start_with(&bin, mechanism);
    let (g, p) = (v4(veth.a_v4), v4(veth.b_v4));
    let mut strays = BTreeSet::new();
    in_netns(&peer, || {
        for i in 0..N as u16 {
            let src = SocketAddrV4::new(p, STRAY_SPORT + i);
            let dst = SocketAddrV4::new(g, STRAY_DPORT + i);
            rawtcp::send_segment(src, dst, 0x1000_0000 + u32::from(i), RST);
            strays.insert((SocketAddr::V4(src), SocketAddr::V4(dst)));
        }
    });
    // Ordinary resets into the guarded namespace: conntrack knows these
    // flows (the SYN went out), so the RSTs are delivered, not dropped.
    let refused = in_netns(&guarded, || {
        (0..N)
            .map(|_| {
                let to = SocketAddr::new(IpAddr::V4(p), CLOSED_PORT);
                match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => true,
                    other => panic!("connect to a closed port: {other:?}"),
                }
            })
            .count()
    });
    assert_eq!(refused, N, "ordinary resets the guarded side received");
    // Let the 1 s summary tick see the counts at least once before the final one.
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = observer.stop();
    let nft_counted = nft::counted_packets(&guarded);
    let _ = resident.kill();
    let _ = wait_within(&mut resident, Duration::from_secs(5));

    assert_eq!(nft_counted, N as u64, "the nft rule's counter");
    let ns = guarded.inode();
    let ours = |kind: &str| -> Vec<&Value> {
        stopped.events.iter().filter(|e| e["kind"] == kind && e["netns"].as_u64() == Some(ns)).collect()
    };
    let show = |v: &[&Value]| v.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");

    // The kernel-side aggregate: every drop counted, whatever the budget.
    let summaries = ours("net.drop.summary");
    let summed = |reason: &str, class: Option<&str>| -> u64 {
        summaries
            .iter()
            .filter(|s| s["reason"] == reason && class.is_none_or(|c| s["flags_class"] == c))
            .map(|s| s["count"].as_u64().expect("count"))
            .sum()
    };
    assert_eq!(
        summed("NETFILTER_DROP", None),
        nft_counted,
        "summed net.drop.summary counts (NETFILTER_DROP) vs the nft counter; summaries:\n{}",
        show(&summaries)
    );
    assert_eq!(summed("NETFILTER_DROP", Some("rst")), N as u64, "of them with the RST class");

    // The individual events: one per stray RST, none for the delivered ones.
    let drops = ours("net.drop");
    let rsts: Vec<&Value> = drops
        .iter()
        .copied()
        .filter(|e| e["tcp_flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "RST")))
        .collect();
    assert_eq!(rsts.len(), N, "dropped RSTs in the guarded netns; drops:\n{}", show(&drops));
    let mut seen = BTreeSet::new();
    for e in &rsts {
        assert_eq!(e["reason"], "NETFILTER_DROP", "{e}");
        assert_eq!(e["flags_class"], "rst", "{e}");
        assert_eq!(e["family"], "ipv4", "{e}");
        let addr = |a: &str, p: &str| -> SocketAddr {
            SocketAddr::new(e[a].as_str().unwrap().parse().unwrap(), e[p].as_u64().unwrap() as u16)
        };
        seen.insert((addr("src_addr", "src_port"), addr("dst_addr", "dst_port")));
    }
    assert_eq!(seen, strays, "4-tuples of the dropped RSTs");
    let from_closed_port = drops.iter().filter(|e| e["src_port"].as_u64() == Some(u64::from(CLOSED_PORT))).count();
    assert_eq!(from_closed_port, 0, "ordinary resets reported as drops:\n{}", show(&drops));

    match kernel_reason_names() {
        // Names and values from this kernel's enum, as tracefs prints them.
        Some(names) => {
            for e in drops.iter().chain(summaries.iter()) {
                let (name, code) = (e["reason"].as_str().unwrap(), e["reason_code"].as_u64().unwrap());
                assert_eq!(e["reason_source"], "kernel", "{e}");
                match names.get(&code) {
                    Some(known) => assert_eq!(known, name, "reason {code} is {known} on this kernel: {e}"),
                    None => assert!(names.values().any(|n| n == name), "{name} is not a drop reason of this kernel"),
                }
            }
        }
        // No reasons (5.10): the netfilter drops are told by where the
        // kernel freed them, netfilter's verdict function.
        None => {
            eprintln!("skb:kfree_skb has no reason field: drops classified by location");
            for e in drops.iter().chain(summaries.iter()).filter(|e| e["reason"] == "NETFILTER_DROP") {
                assert_eq!(e["reason_source"], "location", "{e}");
                assert_eq!(e["reason_code"], Value::Null, "{e}");
            }
            for e in &rsts {
                assert!(e["location"].as_str().is_some_and(|l| l.starts_with("nf_hook_slow+0x")), "{e}");
            }
            for s in summaries.iter().filter(|s| s["reason"] == "NETFILTER_DROP") {
                assert_eq!(s["location"], "nf_hook_slow", "{s}");
            }
        }
    }

    // Who the namespace belongs to: the resident process, and the ns's name.
    let named = drops.iter().chain(summaries.iter()).any(|e| {
        let o = &e["netns_owner"];
        o["name"] == guarded.name() && o["pids"].as_array().is_some_and(|p| p.iter().any(|x| x == resident.id()))
    });
    assert!(named, "no record names the namespace's owner (pid {}):\n{}", resident.id(), show(&drops));
    assert!(
        drops.iter().all(|e| e["location"].as_str().is_some_and(|l| l.contains("+0x"))),
        "every drop has its location symbolized:\n{}",
        show(&drops)
    );
}

/// `value → name` of `enum skb_drop_reason` as the kfree_skb format prints
/// it; `None` where the tracepoint has no reason field (before 5.17).
fn kernel_reason_names() -> Option<HashMap<u64, String>> {
    let path = tracefs::root().join("events/skb/kfree_skb/format");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if !text.contains(" reason;") {
        return None;
    }
    let mut names = HashMap::new();
    // `{ 12, "NETFILTER_DROP" }` pairs of __print_symbolic.
    for pair in text.split('{').skip(1) {
        let Some((value, rest)) = pair.split_once(',') else {
            continue;
        };
        let Some(name) = rest.split('"').nth(1) else {
            continue;
        };
        if let Ok(v) = value.trim().parse() {
            names.insert(v, name.to_string());
        }
    }
    assert!(names.len() > 10, "no reason names in {}", path.display());
    Some(names)
}

const RANDOM_LOSS: &str = "table inet t {
  chain input { type filter hook input priority 0; meta l4proto tcp numgen random mod 100 < 10 drop; }
}";
const DATA: usize = 4 << 20;
const PORT: u16 = 7200;

/// On a kernel with BTF tracepoints the agent uses them (their skipped runs
/// are counted per program); the classic tracepoint, forced, must count the
/// same.
#[test]
fn retransmitted_segments_match_nstat_and_tracefs() {
    retransmits_match(Mechanism::TpBtf);
}

#[test]
fn retransmitted_segments_match_with_the_classic_tracepoint() {
    retransmits_match(Mechanism::Classic);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    TpBtf,
    Classic,
}

/// Starts the agent with `mechanism` for the network tracepoints and checks
/// that it is the one in use, in the ready line and in `/metrics` (whose
/// per-program miss counter names the program attached).
fn start_with(bin: &std::path::Path, mechanism: Mechanism) -> Observer {
    let env = match mechanism {
        Mechanism::TpBtf => vec![],
        Mechanism::Classic => vec![("OBSERVER_CLASSIC_TRACEPOINTS".to_string(), "1".into())],
    };
    let observer = Observer::start_env(bin, &[], &env);
    let ready = observer.stderr_seen().iter().find(|l| l.contains("observer: ready")).cloned().unwrap_or_default();
    // The counters are published with the first status tick, a second after ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let misses = loop {
        let (status, text) = scrape::get(observer.metrics_addr(), "/metrics");
        assert_eq!(status, 200, "{text}");
        let misses: Vec<_> =
            scrape::samples(&text).into_iter().filter(|s| s.name == "observer_program_misses_total").collect();
        if !misses.is_empty() || std::time::Instant::now() > deadline {
            break misses;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let programs: Vec<&str> = misses.iter().filter_map(|s| s.label("program")).collect();
    for (category, name) in
        [("tcp", "tcp_retransmit_skb"), ("skb", "kfree_skb"), ("tcp", "tcp_send_reset"), ("tcp", "tcp_receive_reset")]
    {
        let btf_program = format!("{name}_btf");
        let (wanted, program, other) = match mechanism {
            Mechanism::TpBtf => (format!("tp_btf {category}:{name}"), btf_program.as_str(), name),
            Mechanism::Classic => (
                format!("tracepoint {category}:{name} (tp_btf: OBSERVER_CLASSIC_TRACEPOINTS=1)"),
                name,
                btf_program.as_str(),
            ),
        };
        assert!(ready.contains(&wanted), "want {wanted:?} in the ready line: {ready}");
        assert!(programs.contains(&program), "no miss counter of {program}: {programs:?}");
        assert!(!programs.contains(&other), "{other} is loaded too: {programs:?}");
    }
    observer
}

fn retransmits_match(mechanism: Mechanism) {
    let Some(bin) = require_root_and_bin() else {
        return;
    };
    let sender = Netns::create();
    let receiver = Netns::create();
    let veth = VethPair::new(&sender, &receiver, 32);
    nft::load(&receiver, RANDOM_LOSS);
    let (s_ip, r_ip) = (veth.a_v4, veth.b_v4);
    let listener = in_netns(&receiver, || TcpListener::bind((r_ip, PORT)).expect("listen"));

    let observer = start_with(&bin, mechanism);
    let before = nstat(&sender, "TcpRetransSegs");
    // The kernel's own count, from the same tracepoint, of the sender's flow only.
    let trace = TraceInstance::new("retrans", "tcp", "tcp_retransmit_skb", &format!("dport == {PORT}"));
    let (received, local) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut buf = vec![0u8; 64 << 10];
            let mut total = 0;
            loop {
                match conn.read(&mut buf).expect("read") {
                    0 => break total,
                    n => total += n,
                }
            }
        });
        let local = in_netns(&sender, || {
            let mut conn =
                TcpStream::connect_timeout(&SocketAddr::new(r_ip, PORT), Duration::from_secs(30)).expect("connect");
            conn.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let local = conn.local_addr().unwrap();
            conn.write_all(&vec![0x5a; DATA]).expect("write");
            conn.shutdown(Shutdown::Write).unwrap();
            // EOF from the receiver: it has everything, so nothing of ours is outstanding.
            let mut rest = Vec::new();
            conn.read_to_end(&mut rest).expect("read to EOF");
            local
        });
        (reader.join().expect("reader"), local)
    });
    std::thread::sleep(Duration::from_millis(300));
    let lines = trace.stop();
    let after = nstat(&sender, "TcpRetransSegs");
    std::thread::sleep(Duration::from_millis(200));
    let stopped = observer.stop();
    drop(trace);

    assert_eq!(received, DATA, "bytes received");
    let truth_segs = after - before;
    assert!(truth_segs > 0, "10% loss made no retransmits");
    let ours_in_trace: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!("sport={} ", local.port())) && l.contains(&format!("saddr={s_ip} ")))
        .collect();
    let events: Vec<&Value> = stopped
        .events
        .iter()
        .filter(|e| e["kind"] == "tcp.retransmit" && e["netns"].as_u64() == Some(sender.inode()))
        .collect();
    let show = || events.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    for e in &events {
        assert_eq!(e["local_port"].as_u64(), Some(u64::from(local.port())), "{e}");
        assert_eq!(e["remote_port"].as_u64(), Some(u64::from(PORT)), "{e}");
        assert_eq!(e["remote_addr"].as_str(), Some(r_ip.to_string().as_str()), "{e}");
        assert!(e["cgroup_source"] == "socket", "a retransmit has a full socket: {e}");
    }
    // An attempt that failed (`err`, e.g. -EBUSY while the skb is still
    // queued below) fires the tracepoint but is not counted by the kernel.
    let sent = |e: &&&Value| e["err"].as_i64().is_none_or(|err| err == 0);
    let segs: u64 = events.iter().filter(sent).map(|e| e["segs"].as_u64().expect("segs")).sum();
    assert_eq!(stopped.lost, 0, "events lost by the agent");
    assert_eq!(
        events.len(),
        ours_in_trace.len(),
        "retransmit events vs tracefs's own count; trace:\n{}\nevents:\n{}",
        lines.join("\n"),
        show()
    );
    assert_eq!(segs, truth_segs, "summed segs vs TcpRetransSegs; events:\n{}", show());
    let gso: u64 = events.iter().map(|e| e["gso_segs"].as_u64().unwrap_or(0).max(1)).sum();
    eprintln!(
        "retransmits: {} skbs, {segs} segments (TcpRetransSegs {truth_segs}; shinfo gso_segs sum {gso})",
        events.len()
    );
}
