//! nftables rule sets inside a test's namespace, and their counters.

use std::process::Command;

use crate::command::run_ok;
use crate::netns::Netns;

/// Loads `ruleset` (nft syntax) into `ns`.
pub fn load(ns: &Netns, ruleset: &str) {
    let file = tempfile::NamedTempFile::new().expect("temporary nft file");
    std::fs::write(file.path(), ruleset).expect("write nft file");
    run_ok(ns.exec("nft").arg("-f").arg(file.path()));
}

/// Packets counted by every `counter` statement of `ns`'s rule set, summed.
pub fn counted_packets(ns: &Netns) -> u64 {
    let out = run_ok(Command::new("ip").args(["netns", "exec", ns.name(), "nft", "-j", "list", "ruleset"]));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft -j output is JSON");
    let mut total = 0;
    for item in json["nftables"].as_array().into_iter().flatten() {
        for expr in item["rule"]["expr"].as_array().into_iter().flatten() {
            if let Some(p) = expr["counter"]["packets"].as_u64() {
                total += p;
            }
        }
    }
    total
}
