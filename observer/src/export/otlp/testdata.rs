//! Test fixtures: a CA and a client certificate it signed (EC P-256, made
//! once with openssl, valid for 100 years), and an episode of every kind of
//! child.

use std::path::{Path, PathBuf};

pub const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBjTCCATOgAwIBAgIUDvoTnEUcUhiL6tOhNOF27b9hzUAwCgYIKoZIzj0EAwIw\nGzEZMBcGA1UEAwwQb2JzZXJ2ZXIgdGVzdCBDQTAgFw0yNjEyMDEyMDE1NDFaGA8y\nMTI2MTEwNzIwMTU0MVowGzEZMBcGA1UEAwwQb2JzZXJ2ZXIgdGVzdCBDQTBZMBMG\nByqGSM49AgEGCCqGSM49AwEHA0IABMQwPpggs9uKWDGV6VPTh4SMNzYGJbKnFRtg\nmynQu+jnv/V5C1/aZ/H00tcGo3cQMSWYzkfB/lWkaKVNKv/yWd+jUzBRMB0GA1Ud\nDgQWBBT5sQtqU1JuwqObHgMjqn51Vn3tbzAfBgNVHSMEGDAWgBT5sQtqU1JuwqOb\nHgMjqn51Vn3tbzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQCx\nMu+QSI6iWbcn76rjcaaAiDnZDY9J8OK9JZnOHgMRbAIgEsB2hMsRt3dtZJBXFZ/G\nwESaZpSzyWLJMaHN+ttGIYQ=\n-----END CERTIFICATE-----\n";
pub const CLIENT_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBrTCCAVOgAwIBAgIUXg/7Kygvf6D2oaODctx0Akn0SjQwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQb2JzZXJ2ZXIgdGVzdCBDQTAgFw0yNjEyMDEyMDI1MzJaGA8y
MTI2MTEwNzIwMjUzMlowHzEdMBsGA1UEAwwUb2JzZXJ2ZXIgdGVzdCBjbGllbnQw
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASp8+nVZNDzdb3nZxuts8m69tzzrcuK
sWkhy4VG95hxOPvEb7zW1OwtyNukt76DOWGrniyktRln+b+vCCBqWPlXo28wbTAJ
BgNVHRMEAjAAMAsGA1UdDwQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcDAjAdBgNV
HQ4EFgQU4aupXuWH6uJwAosAl3CIgJlpBl4wHwYDVR0jBBgwFoAU+bELalNSbsKj
mx4DI6p+dVZ97W8wCgYIKoZIzj0EAwIDSAAwRQIhAL7/nBEoYLfSY38c31e5GYYJ
weQ9BGFUJluhYq2DvkiSAiAagBr1bxN2Iv4N0SyL/kUOGOqhRJ4geQ2t8bM+n6cu
ow==
-----END CERTIFICATE-----
";
pub const CLIENT_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgcF2E+3huSWgRJ2gf\nWVIV3Of6+oU7m5yTRbEacgN4KHOhRANCAASp8+nVZNDzdb3nZxuts8m69tzzrcuK\nsWkhy4VG95hxOPvEb7zW1OwtyNukt76DOWGrniyktRln+b+vCCBqWPlX\n-----END PRIVATE KEY-----\n";

/// Writes the three PEM files; returns (CA, client certificate, client key).
pub fn write_pems(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let paths = (dir.join("ca.pem"), dir.join("client.pem"), dir.join("client.key"));
    std::fs::write(&paths.0, CA_PEM).unwrap();
    std::fs::write(&paths.1, CLIENT_CERT_PEM).unwrap();
    std::fs::write(&paths.2, CLIENT_KEY_PEM).unwrap();
    paths
}

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    cgroup::container::{Qos, Runtime},
    correlate::episode::{Child, CloseReason, Episode, EpisodeKind, Folded, Signal, SpanRef},
    event::*,
    process::environ::{EnvironRead, GoEnv},
    workload::Identity,
};

pub const T0: u64 = 1_795_626_000_000_000_000;
pub const TRACE_ID: [u8; 16] = [0xab; 16];
pub const ROOT_SPAN: [u8; 8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];

pub fn identity() -> Identity {
    Identity {
        service_name: "checkout".into(),
        cgroup_id: Some(8123),
        cgroup_path: Some("/kubepods.slice/kubepods-burstable.slice/pod.slice/cri-containerd-8b3f.scope".into()),
        container_id: Some("8b3f".into()),
        container_runtime: Some(Runtime::Containerd),
        k8s_pod_uid: Some("0f5e6a4c-1b2d-4c3e-9f80-a1b2c3d4e5f6".into()),
        k8s_pod_qos: Some(Qos::Burstable),
        k8s: None,
        pid: Some(4242),
        executable_name: Some("server".into()),
        go_version: Some("go1.26.8".into()),
        go_env: Some(go_env()),
        netns: None,
    }
}

/// [`identity`] with its pod's metadata from the Kubernetes API.
pub fn pod_identity() -> Identity {
    Identity {
        k8s: Some(crate::workload::K8sMetadata {
            pod_name: Some("checkout-7d4b9c8f6-x2x4z".into()),
            namespace: Some("shop".into()),
            node_name: Some("node-a".into()),
            container_name: Some("server".into()),
            owners: ["deployment:checkout", "replicaset:checkout-7d4b9c8f6"]
                .map(|o| {
                    let (kind, name) = o.split_once(':').unwrap();
                    crate::kube::meta::Owner { kind: kind.into(), name: name.into() }
                })
                .to_vec(),
        }),
        ..identity()
    }
}

fn go_env() -> GoEnv {
    GoEnv {
        environ: EnvironRead::Read,
        environ_error: None,
        env_gogc: Some("150".into()),
        env_gomemlimit: Some("6GiB".into()),
        env_godebug: Some("madvdontneed=1".into()),
    }
}

fn who() -> Attribution {
    Attribution {
        cgroup_id: Some(8123),
        cgroup_path: Some("/x".into()),
        cgroup_source: CgroupSource::Process,
        workload: Workload::default(),
        pid: Some(4242),
        comm: Some("server".into()),
    }
}

fn owner() -> GoOwner {
    GoOwner { go_version: Some("go1.26.8".into()), go_module: Some("example.com/server".into()), who: who() }
}

fn limits() -> MemcgLimits {
    MemcgLimits { memory_current: Some(90 << 20), memory_high: Some(100 << 20), memory_max: Some(128 << 20) }
}

fn record(offset_ns: u64, event: Event) -> Record {
    Record { time: "2026-11-25T17:00:00Z".into(), time_unix_nano: T0 + offset_ns, event }
}

/// One record of each `Event` variant, every optional field set.
pub fn one_record_of_every_kind() -> Vec<Record> {
    let ip = |s: &str| s.parse().unwrap();
    vec![
        record(
            1_000,
            Event::GoGc(GoGc {
                cycle: Some(17),
                start_time: None,
                start_unix_nano: Some(T0 + 500),
                end_time: None,
                end_unix_nano: Some(T0 + 1_000),
                sweep_termination_ns: Some(10),
                mark_ns: Some(400),
                mark_termination_ns: Some(20),
                heap_start_bytes: Some(4 << 20),
                heap_end_bytes: Some(5 << 20),
                heap_marked_bytes: Some(3 << 20),
                heap_goal_bytes: Some(8 << 20),
                gogc: Some(100),
                memory_limit_bytes: Some(i64::MAX),
                cycles_unseen: Some(16),
                owner: owner(),
            }),
        ),
        record(
            2_000,
            Event::GoAssist(GoAssist {
                duration_ns: Some(300),
                goroutine: "0xc000001".into(),
                tid: 4243,
                owner: owner(),
            }),
        ),
        record(2_500, Event::GoHeapGrow(GoHeapChange { bytes: 4 << 20, tid: 4243, owner: owner() })),
        record(2_600, Event::GoScavenge(GoHeapChange { bytes: 4 << 20, tid: 4244, owner: owner() })),
        record(
            2_700,
            Event::GoScavengeSummary(GoScavengeSummary {
                calls: 240,
                bytes: 240 << 16,
                total_calls: 1000,
                total_bytes: 1000 << 16,
                owner: owner(),
            }),
        ),
        record(
            2_800,
            Event::GoAttach(GoAttach {
                executable: Some("/usr/bin/server".into()),
                layout: "dwarf",
                probes: 6,
                alloc_sampling: "memprofile",
                mappings: None,
                watched_from: "attach",
                cycles_at_attach: Some(3),
                env: go_env(),
                owner: owner(),
            }),
        ),
        record(
            3_000,
            Event::MemcgThrottle(MemcgThrottle {
                mechanism: "fentry",
                inferred: false,
                duration_ns: Some(2_000_000),
                nr_pages: Some(64),
                limits: limits(),
                who: who(),
            }),
        ),
        record(
            3_100,
            Event::MemcgThrottleIdle(MemcgThrottleIdle { mechanism: "fentry", count: 5, total: 50, who: who() }),
        ),
        record(
            4_000,
            Event::MemcgReclaim(MemcgReclaim {
                duration_ns: Some(1_000),
                nr_reclaimed: 32,
                limits: limits(),
                who: who(),
            }),
        ),
        record(
            4_100,
            Event::MemcgReclaimStat(MemcgReclaimStat {
                mechanism: "memory.stat",
                delta: ReclaimStatCounts {
                    pgscan: 10,
                    pgsteal: 8,
                    pgscan_kswapd: 4,
                    pgscan_direct: 6,
                    pgsteal_kswapd: 3,
                    pgsteal_direct: 5,
                },
                total: ReclaimStatCounts::default(),
                limits: limits(),
                who: who(),
            }),
        ),
        record(
            4_200,
            Event::MemcgEvents(MemcgEvents {
                mechanism: "inotify",
                delta: MemoryEventCounts { low: 0, high: 3, max: 1, oom: 0, oom_kill: 0, oom_group_kill: Some(0) },
                total: MemoryEventCounts::default(),
                limits: limits(),
                who: who(),
            }),
        ),
        record(
            4_300,
            Event::MemcgPressure(MemcgPressure {
                mechanism: "trigger",
                some_total_us: 900,
                full_total_us: 400,
                some_delta_us: 90,
                full_delta_us: 40,
                some_avg10: 1.5,
                full_avg10: 0.25,
                at_stop: false,
                limits: limits(),
                who: who(),
            }),
        ),
        record(
            5_000,
            Event::TcpReset(TcpReset {
                direction: Direction::Sent,
                family: "ipv4",
                local_addr: ip("10.0.0.7"),
                local_port: 8080,
                remote_addr: ip("10.0.0.9"),
                remote_port: 51234,
                state: Some("TCP_ESTABLISHED"),
                reason: Some("NO_SOCKET".into()),
                netns: 4026531840,
                who: who(),
            }),
        ),
        record(
            5_100,
            Event::TcpRetransmit(TcpRetransmit {
                family: "ipv6",
                local_addr: ip("::1"),
                local_port: 443,
                remote_addr: ip("::2"),
                remote_port: 50000,
                state: Some("TCP_ESTABLISHED"),
                segs: 2,
                gso_segs: 2,
                err: Some(0),
                netns: 4026531840,
                netns_owner: None,
                who: who(),
            }),
        ),
        record(
            5_200,
            Event::NetDrop(NetDrop {
                reason: "NO_SOCKET".into(),
                reason_code: Some(2),
                reason_source: "kernel",
                location: Some("tcp_v4_rcv+0x1a0".into()),
                family: "ipv4",
                tcp_flags: Some(vec!["RST"]),
                flags_class: "rst",
                src_addr: Some(ip("10.0.0.9")),
                src_port: Some(51234),
                dst_addr: Some(ip("10.0.0.7")),
                dst_port: Some(9),
                netns: 4026531840,
                netns_owner: None,
                who: who(),
            }),
        ),
        record(
            5_300,
            Event::NetDropSummary(NetDropSummary {
                netns: 4026531840,
                netns_owner: None,
                reason: "NO_SOCKET".into(),
                reason_code: Some(2),
                reason_source: "kernel",
                location: None,
                flags_class: "rst",
                count: 7,
                total: 70,
            }),
        ),
        record(
            9_000,
            Event::MemcgOomKill(MemcgOomKill {
                comm_source: Some("record"),
                trigger_pid: 4300,
                trigger_comm: "worker".into(),
                total_vm_kb: Some(1 << 20),
                anon_rss_kb: Some(900 << 10),
                who: Attribution { pid: Some(4242), comm: Some("server".into()), ..who() },
            }),
        ),
    ]
}

/// A `memory.pressure` episode closed by an OOM kill, continuing another,
/// with a child per record kind the engine makes spans of and one folded kind.
pub fn episode_with_every_child() -> Episode {
    let keep = ["go.gc", "go.assist", "memcg.throttle", "memcg.reclaim", "tcp.reset", "memcg.oom_kill"];
    let children: Vec<Child> = one_record_of_every_kind()
        .into_iter()
        .filter(|r| keep.contains(&crate::export::otlp::attributes::record_kind(&r.event)))
        .enumerate()
        .map(|(i, record)| Child {
            span_id: [0x10, 0, 0, 0, 0, 0, 0, i as u8 + 1],
            start_unix_nano: record.time_unix_nano - 100,
            end_unix_nano: record.time_unix_nano,
            record,
        })
        .collect();
    let mut counts = BTreeMap::new();
    counts.insert(Signal::GcCycle, 301);
    counts.insert(Signal::MemoryEvents("high"), 3);
    counts.insert(Signal::TcpReset("sent"), 1);
    counts.insert(Signal::OomKill, 1);
    counts.insert(Signal::NetDrop("NO_SOCKET".into()), 7);
    Episode {
        kind: EpisodeKind::MemoryPressure,
        root: SpanRef { trace_id: TRACE_ID, span_id: ROOT_SPAN },
        workload: Arc::new(identity()),
        start_unix_nano: T0,
        end_unix_nano: T0 + 10_000,
        closed_by: CloseReason::OomKill,
        previous: Some(SpanRef { trace_id: [0xcd; 16], span_id: [0xee; 8] }),
        limits_at_open: Some(MemcgLimits { memory_current: Some(1), memory_high: Some(100 << 20), memory_max: None }),
        limits_at_close: Some(limits()),
        counts,
        children,
        folded: vec![Folded {
            span_id: [0x20, 0, 0, 0, 0, 0, 0, 1],
            kind: "go.gc",
            count: 300,
            sum: 300,
            min: 1,
            max: 1,
            unit: "1",
            start_unix_nano: T0 + 1_000,
            end_unix_nano: T0 + 8_000,
        }],
        profiles: vec![
            crate::correlate::episode::ProfileRef {
                kind: "cpu",
                file: "profiles/0a000000000000000000000000000001.cpu.pb.gz".into(),
                id: [0x33; 16],
                samples: 190,
                start_unix_nano: T0,
                end_unix_nano: T0 + 10_000,
            },
            crate::correlate::episode::ProfileRef {
                kind: "alloc",
                file: "profiles/0a000000000000000000000000000001.alloc.pb.gz".into(),
                id: [0x44; 16],
                samples: 2300,
                start_unix_nano: T0,
                end_unix_nano: T0 + 10_000,
            },
        ],
    }
}
