//! The agent's event records: what the live view prints and what the JSON
//! lines hold. Shapes are kept flat and stable; every signal adds a variant.

use std::net::IpAddr;

use serde::Serialize;

/// One observed event, stamped with wall-clock time.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    pub time_unix_nano: u64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind")]
pub enum Event {
    #[serde(rename = "tcp.reset")]
    TcpReset(TcpReset),
    #[serde(rename = "go.gc")]
    GoGc(GoGc),
}

/// Who an event belongs to.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Attribution {
    /// cgroup v2 id (the cgroup directory's inode number).
    pub cgroup_id: Option<u64>,
    /// Path below the cgroup2 mount, when the cgroup still exists.
    pub cgroup_path: Option<String>,
    pub cgroup_source: CgroupSource,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

/// Where the cgroup came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupSource {
    /// The socket's owner (`sk->sk_cgrp_data`): right even in softirq context.
    Socket,
    /// The process the event happened in (a uprobe runs in the traced process itself).
    Process,
    /// Not known (a reset sent for a packet that matched no full socket).
    #[default]
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Sent,
    Received,
}

#[derive(Debug, Clone, Serialize)]
pub struct TcpReset {
    pub direction: Direction,
    pub family: &'static str,
    /// For `sent`, the side that sent the RST; for `received`, the socket that got it.
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub remote_addr: IpAddr,
    pub remote_port: u16,
    pub state: Option<&'static str>,
    pub reason: Option<String>,
    /// Network namespace inode.
    pub netns: u32,
    #[serde(flatten)]
    pub who: Attribution,
}

/// One Go GC cycle of a watched process (at its mark termination).
#[derive(Debug, Clone, Serialize)]
pub struct GoGc {
    /// The cycle's number as `GODEBUG=gctrace=1` prints it; `null` when the
    /// runtime's layout for this Go version is unknown.
    pub cycle: Option<u32>,
    pub go_version: Option<String>,
    pub go_module: Option<String>,
    #[serde(flatten)]
    pub who: Attribution,
}
