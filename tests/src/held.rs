//! What a running agent holds: its open descriptors, the BPF links among
//! them, and the entries of one of its maps (found by name through the
//! map ids in its `fdinfo`, read with `bpftool`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::command::run_ok;

/// Counts taken from `/proc/AGENT/fd` and `/proc/AGENT/fdinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Every open descriptor.
    pub fds: usize,
    /// Descriptors that are BPF links (`link_id:` in fdinfo).
    pub links: usize,
    /// Entries per map name asked for.
    pub map_entries: BTreeMap<String, usize>,
}

/// What `agent` holds now, with the entry counts of the maps named `maps`
/// (names as `bpftool` shows them: the kernel keeps 15 bytes).
pub fn held(agent: u32, maps: &[&str]) -> Held {
    let dir = format!("/proc/{agent}/fdinfo");
    let mut held = Held { fds: 0, links: 0, map_entries: BTreeMap::new() };
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")).flatten() {
        // A descriptor closed since the listing is no longer held.
        let Ok(info) = std::fs::read_to_string(entry.path()) else { continue };
        held.fds += 1;
        let field = |key: &str| info.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
        if field("link_id:").is_some() {
            held.links += 1;
        }
        let Some(id) = field("map_id:") else { continue };
        let name = bpftool(&["map", "show", "id", id])["name"].as_str().unwrap_or_default().to_string();
        if let Some(wanted) = maps.iter().find(|m| name == m[..m.len().min(15)]) {
            let entries = bpftool(&["map", "dump", "id", id]).as_array().map_or(0, Vec::len);
            held.map_entries.insert((*wanted).to_string(), entries);
        }
    }
    for m in maps {
        assert!(held.map_entries.contains_key(*m), "the agent (pid {agent}) holds no map {m}: {held:?}");
    }
    held
}

/// Samples [`held`] until it equals `expected` (the agent may still be
/// letting go of something) or `within` passes; returns the last sample.
pub fn held_settles_to(agent: u32, maps: &[&str], expected: &Held, within: Duration) -> Held {
    let deadline = Instant::now() + within;
    loop {
        let now = held(agent, maps);
        if &now == expected || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = run_ok(Command::new("bpftool").arg("-j").args(args));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}"))
}
