//! Reading the agent's endpoints: a plain HTTP/1.1 GET on loopback, and the
//! OpenMetrics text parsed into samples.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// `GET path` → (status code, body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request");
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap_or_else(|e| panic!("reading {path} from {addr}: {e}"));
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end: {response}"));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    (status, body.to_string())
}

/// One sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The samples of an exposition (comments skipped; label values unescaped).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(parse_line).collect()
}

fn parse_line(line: &str) -> Sample {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i..]),
        None => line.split_once(' ').map(|(n, _)| (n, "")).unwrap_or_else(|| panic!("bad sample line {line:?}")),
    };
    let mut labels = Vec::new();
    let mut tail = line[name.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut key = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    end = Some(i + 2);
                    break;
                }
                ',' => {}
                '=' => {
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                    let mut value = String::new();
                    while let Some((_, c)) = chars.next() {
                        match c {
                            '\\' => match chars.next().map(|(_, c)| c) {
                                Some('n') => value.push('\n'),
                                Some(other) => value.push(other),
                                None => panic!("{line}"),
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                c => key.push(c),
            }
        }
        tail = rest[end.unwrap_or_else(|| panic!("no closing brace: {line}"))..].trim_start();
    }
    let value = tail.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"));
    Sample { name: name.to_string(), labels, value }
}

/// The sum of `name`'s samples whose labels include every pair of `with`.
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples.iter().filter(|s| s.name == name && with.iter().all(|(k, v)| s.label(k) == Some(v))).map(|s| s.value).sum()
}

/// Whether the exposition offers `name` to a query: a sample of that name,
/// or a family declared by `# TYPE` whose samples carry that name (a
/// counter `x` is read as `x_total`, a histogram as `x_bucket`, `x_sum`,
/// `x_count`). A declared family counts even before its first sample: the
/// per-workload counters have series only once a workload has had such a
/// record, but their names are fixed.
pub fn exposes(text: &str, name: &str) -> bool {
    if samples(text).iter().any(|s| s.name == name) {
        return true;
    }
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).any(|l| {
        let mut w = l.split_whitespace();
        let (Some(family), Some(kind)) = (w.next(), w.next()) else { return false };
        let suffixes: &[&str] = match kind {
            // The 0.0.4 text format declares a counter by its sample name.
            "counter" if family.ends_with("_total") => &[""],
            "counter" => &["_total", "_created"],
            "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        suffixes.iter().any(|s| format!("{family}{s}") == name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes() {
        let s = samples("# TYPE a counter\na_total{x=\"1\",y=\"q\\\"\\n,}\"} 3\nb 1.5\n# EOF\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "a_total");
        assert_eq!(s[0].label("y"), Some("q\"\n,}"));
        assert_eq!(s[0].value, 3.0);
        assert_eq!((s[1].name.as_str(), s[1].value), ("b", 1.5));
        assert_eq!(sum(&s, "a_total", &[("x", "1")]), 3.0);
    }

    #[test]
    fn exposes_families_by_their_sample_names() {
        let text = "# TYPE a counter\n# TYPE c_total counter\n# TYPE h histogram\n# TYPE g gauge\ng 1\n# EOF\n";
        for yes in ["a_total", "c_total", "h_bucket", "h_count", "g"] {
            assert!(exposes(text, yes), "{yes}");
        }
        for no in ["a", "c_total_total", "h", "g_total", "a_bucket", "b"] {
            assert!(!exposes(text, no), "{no}");
        }
    }
}
