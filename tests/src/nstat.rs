//! The kernel's SNMP counters of one namespace, read with `nstat`.

use std::collections::HashMap;
use std::process::Command;

use crate::command::run_ok;
use crate::netns::Netns;

/// Absolute value of `counter` (e.g. `TcpOutRsts`) in `ns`. Callers still take
/// a before/after difference rather than trusting a fresh namespace to be 0.
pub fn nstat(ns: &Netns, counter: &str) -> u64 {
    // -a: absolute values, -s: leave nstat's history file alone, -z: print zeros.
    let out = run_ok(Command::new("ip").args(["netns", "exec", ns.name(), "nstat", "-asz"]));
    let text = String::from_utf8_lossy(&out.stdout);
    *parse(&text).get(counter).unwrap_or_else(|| panic!("nstat in {} has no {counter}:\n{text}", ns.name()))
}

/// Parses `nstat` output: `#` comment lines, then `Name  value  rate` lines.
pub fn parse(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next()?;
            let value = fields.next()?.parse().ok()?;
            Some((name.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_counters_and_skips_comments() {
        let text = "#kernel\nIpInReceives                    12                 0.0\n\
                    TcpOutRsts                      10                 0.0\n\
                    TcpExtTCPAbortOnData            0                  0.0\n";
        let c = parse(text);
        assert_eq!(c.len(), 3);
        assert_eq!(c["TcpOutRsts"], 10);
        assert_eq!(c["TcpExtTCPAbortOnData"], 0);
        assert_eq!(c["IpInReceives"], 12);
    }

    #[test]
    fn ignores_malformed_lines() {
        let c = parse("#kernel\n\nTcpOutRsts x 0.0\nTcpInSegs 3 0.0\n");
        assert_eq!(c.len(), 1);
        assert_eq!(c["TcpInSegs"], 3);
    }
}
