//! Network namespaces and veth pairs that a test creates and removes.
//!
//! Every packet a test makes stays inside these namespaces; the host's own
//! interfaces are never touched (both veth ends are created directly inside
//! their namespaces).

use std::ffi::OsStr;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::command::run_ok;

/// A named network namespace (`ip netns add`) with `lo` up; deleted on drop.
pub struct Netns {
    name: String,
    inode: u64,
}

impl Netns {
    pub fn create() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("obs-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        // From here on Drop removes it, even if the rest panics.
        let mut ns = Netns { name, inode: 0 };
        ns.inode = std::fs::metadata(format!("/run/netns/{}", ns.name))
            .unwrap_or_else(|e| panic!("stat /run/netns/{}: {e}", ns.name))
            .ino();
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's inode: what `readlink /proc/PID/ns/net` shows and what
    /// the agent reports as `netns`.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// `ip -n NAME ARGS...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// A command that runs `program` inside this namespace.
    pub fn exec(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

/// The addresses of a veth pair joining namespace `a` to namespace `b`.
/// The pair goes away with the namespaces.
pub struct VethPair {
    pub a_v4: IpAddr,
    pub b_v4: IpAddr,
    pub a_v6: IpAddr,
    pub b_v6: IpAddr,
}

impl VethPair {
    /// Joins `a` and `b` with 10.200.`subnet`.1/24 and fd00:200:`subnet`::1/64
    /// on `a`'s side, `.2` and `::2` on `b`'s. The subnet only has to be unique
    /// among pairs joining the same namespaces.
    pub fn new(a: &Netns, b: &Netns, subnet: u8) -> VethPair {
        a.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", b.name()]);
        let pair = VethPair {
            a_v4: format!("10.200.{subnet}.1").parse().unwrap(),
            b_v4: format!("10.200.{subnet}.2").parse().unwrap(),
            a_v6: format!("fd00:200:{subnet}::1").parse().unwrap(),
            b_v6: format!("fd00:200:{subnet}::2").parse().unwrap(),
        };
        for (ns, dev, v4, v6) in [(a, "veth0", pair.a_v4, pair.a_v6), (b, "veth1", pair.b_v4, pair.b_v6)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            // nodad: usable at once instead of after duplicate address detection.
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        pair
    }
}
