//! An episode as text, the same wherever it is read: the live view's detail
//! and `observer episodes show` both render an episode as it is stored in
//! `traces.jsonl` (an OTLP `ResourceSpans`: the workload's resource, the root
//! span, its children), so the two cannot drift. The live view turns an
//! episode it holds into that form with the exporters' own transform.
//!
//! Also the one-line [`Summary`] of an episode: the live view's episode list
//! and `observer episodes` print the same columns.

use std::path::Path;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::Span,
};

use crate::{
    correlate::{Episode, EpisodeKind, OpenEpisode, Signal},
    export::{
        live::printable,
        otlp::{NodeResource, file, spans::episode_batch},
    },
    workload::Identity,
};

const COUNT_PREFIX: &str = "observer.count.";

/// One episode as stored: its workload's resource, its root, its children.
#[derive(Clone, Debug)]
pub struct Stored {
    pub resource: Vec<KeyValue>,
    pub root: Span,
    pub children: Vec<Span>,
}

impl Stored {
    /// The episodes of one `traces.jsonl` line: one per root span.
    pub fn from_request(request: ExportTraceServiceRequest) -> Vec<Stored> {
        let mut out = Vec::new();
        for rs in request.resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let (roots, children): (Vec<Span>, Vec<Span>) =
                rs.scope_spans.into_iter().flat_map(|s| s.spans).partition(|s| s.parent_span_id.is_empty());
            for root in roots {
                let children = children.iter().filter(|c| c.trace_id == root.trace_id).cloned().collect();
                out.push(Stored { resource: resource.clone(), root, children });
            }
        }
        out
    }

    /// An episode the agent holds, as the exporters write it.
    pub fn from_episode(episode: &Episode, node: &NodeResource) -> Option<Stored> {
        let (resource, spans) = episode_batch(episode, node);
        Stored::from_request(file::request(&resource, spans)).into_iter().next()
    }

    /// Its id: the trace id, hex.
    pub fn id(&self) -> String {
        hex(&self.root.trace_id)
    }

    fn root_str(&self, key: &str) -> Option<String> {
        find(&self.root.attributes, key).map(text)
    }

    fn resource_str(&self, key: &str) -> Option<String> {
        find(&self.resource, key).map(text)
    }

    pub fn summary(&self) -> Summary {
        let counts = self
            .root
            .attributes
            .iter()
            .filter_map(|kv| Some((kv.key.strip_prefix(COUNT_PREFIX)?.to_string(), int(kv.value.as_ref()?)?)))
            .map(|(k, v)| (k, u64::try_from(v).unwrap_or(0)))
            .collect();
        Summary {
            id: self.id(),
            kind: self.root.name.clone(),
            workload: self.resource_str("service.name").unwrap_or_default(),
            pid: find(&self.resource, "process.pid").and_then(int).and_then(|p| u32::try_from(p).ok()),
            namespace: self.resource_str("k8s.namespace.name"),
            start_unix_nano: self.root.start_time_unix_nano,
            end_unix_nano: self.root.end_time_unix_nano,
            closed_by: self.root_str("observer.episode.close_reason").unwrap_or_else(|| "?".into()),
            counts,
        }
    }
}

/// One line about an episode (the list's row).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub id: String,
    pub kind: String,
    /// As the workload named itself (escaped when printed).
    pub workload: String,
    pub pid: Option<u32>,
    pub namespace: Option<String>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// `quiet`, `oom_kill`, `max_length`, `shutdown`, or `open`.
    pub closed_by: String,
    /// Per signal (`tcp.reset.sent`, `go.gc`, …), in the episodes' order.
    pub counts: Vec<(String, u64)>,
}

impl Summary {
    fn of(
        id: [u8; 16],
        kind: EpisodeKind,
        w: &Identity,
        (start, end): (u64, u64),
        closed_by: &str,
        counts: &std::collections::BTreeMap<Signal, u64>,
    ) -> Summary {
        Summary {
            id: hex(&id),
            kind: kind.name().into(),
            workload: w.service_name.clone(),
            pid: w.pid,
            namespace: w.k8s.as_ref().and_then(|k| k.namespace.clone()),
            start_unix_nano: start,
            end_unix_nano: end,
            closed_by: closed_by.into(),
            counts: counts.iter().map(|(s, &n)| (s.name(), n)).collect(),
        }
    }

    pub fn of_closed(e: &Episode) -> Summary {
        let span = (e.start_unix_nano, e.end_unix_nano);
        Summary::of(e.root.trace_id, e.kind, &e.workload, span, e.closed_by.name(), &e.counts)
    }

    pub fn of_open(e: &OpenEpisode) -> Summary {
        Summary::of(e.root.trace_id, e.kind, &e.workload, (e.start_unix_nano, e.end_unix_nano), "open", &e.counts)
    }

    /// `checkout (pid 4242)`, escaped.
    pub fn who(&self) -> String {
        let name = printable(&self.workload);
        match (&self.namespace, self.pid) {
            (Some(ns), _) => format!("{}/{name}", printable(ns)),
            (None, Some(pid)) => format!("{name} (pid {pid})"),
            (None, None) => name,
        }
    }

    pub fn header() -> String {
        format!(
            "{:<16}  {:<19}  {:>8}  {:<15}  {:<32}  {:<10}  COUNTS",
            "ID", "START (UTC)", "LENGTH", "KIND", "WORKLOAD", "CLOSED BY"
        )
    }

    pub fn line(&self) -> String {
        let counts: Vec<String> = self.counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
        format!(
            "{:<16}  {:<19}  {:>8}  {:<15}  {:<32}  {:<10}  {}",
            self.id.get(..16).unwrap_or(&self.id),
            date_time(self.start_unix_nano),
            seconds(self.end_unix_nano.saturating_sub(self.start_unix_nano)),
            self.kind,
            self.who(),
            self.closed_by,
            counts.join(" ")
        )
    }
}

/// The episode's timeline: what it is, where its files are, then every
/// child (GC cycles, throttles, reclaim runs, resets, the OOM kill, folded
/// aggregates) in time order with its figures. Every line is escaped.
pub fn render(e: &Stored, trace_file: &Path) -> Vec<String> {
    let s = e.summary();
    let root = &e.root;
    let mut out = vec![
        format!("episode {} {} of {}", s.id, s.kind, s.who()),
        format!(
            "  {} to {} ({}), closed by {}",
            crate::kernel::clock::rfc3339(root.start_time_unix_nano),
            crate::kernel::clock::rfc3339(root.end_time_unix_nano),
            seconds(root.end_time_unix_nano.saturating_sub(root.start_time_unix_nano)),
            s.closed_by
        ),
    ];
    let counts: Vec<String> = s.counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
    out.push(format!("  counts: {}", if counts.is_empty() { "none".into() } else { counts.join(" ") }));
    // The resource's attributes come in no fixed order: by name.
    let mut resource = e.resource.clone();
    resource.sort_by(|a, b| a.key.cmp(&b.key));
    out.push(format!("  workload: {}", attributes(&resource, "")));
    let root_attrs: Vec<KeyValue> = root
        .attributes
        .iter()
        .filter(|kv| {
            !kv.key.starts_with(COUNT_PREFIX)
                && !kv.key.starts_with("observer.episode.")
                && !kv.key.starts_with(PROFILE_PREFIX)
        })
        .cloned()
        .collect();
    if !root_attrs.is_empty() {
        out.push(format!("  episode: {}", attributes(&root_attrs, "")));
    }
    out.push(format!("  trace: {} (trace id {})", trace_file.display(), s.id));
    // `observer.profile.<kind>.file` (inside the output directory) and its `.samples`.
    let value = |key: &str| root.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).map(text);
    let files: Vec<(&str, String)> = root
        .attributes
        .iter()
        .filter_map(|kv| {
            let kind = kv.key.strip_prefix(PROFILE_PREFIX)?.strip_suffix(".file")?;
            Some((kind, kv.value.as_ref().map(text)?))
        })
        .collect();
    if files.is_empty() {
        out.push("  profiles: none".into());
    }
    let dir = trace_file.parent().unwrap_or(std::path::Path::new(""));
    for (kind, file) in files {
        let samples = value(&format!("{PROFILE_PREFIX}{kind}.samples")).unwrap_or_else(|| "?".into());
        out.push(format!("  profile: {kind} {} ({samples} samples)", dir.join(file).display()));
    }
    let mut children: Vec<&Span> = e.children.iter().collect();
    children.sort_by_key(|c| c.start_time_unix_nano);
    out.push(format!("  timeline ({} children, in time order):", children.len()));
    for c in children {
        let offset = c.start_time_unix_nano as i128 - root.start_time_unix_nano as i128;
        let took = c.end_time_unix_nano.saturating_sub(c.start_time_unix_nano);
        let took = if took == 0 { "-".to_string() } else { duration(took) };
        let prefix = format!("{}.", c.name.trim_end_matches(".folded"));
        out.push(format!(
            "  {:>+12.6}s  {:<16} {:>12}  {}",
            offset as f64 / 1e9,
            c.name,
            took,
            attributes(&c.attributes, &prefix)
        ));
    }
    out.iter().map(|l| printable(l)).collect()
}

/// Attributes as `key=value`, `observer.` and `prefix` left off the keys,
/// durations in ms and sizes in KiB/MiB.
/// The root span's attributes that name its profiles.
const PROFILE_PREFIX: &str = "observer.profile.";

fn attributes(attrs: &[KeyValue], prefix: &str) -> String {
    const NOISE: &[&str] = &["observer.cgroup.source", "network.transport"];
    let mut out = Vec::new();
    for kv in attrs.iter().filter(|kv| !NOISE.contains(&kv.key.as_str())) {
        let Some(value) = kv.value.as_ref() else { continue };
        let key = kv.key.strip_prefix("observer.").unwrap_or(&kv.key);
        let key = key.strip_prefix(prefix.strip_prefix("observer.").unwrap_or(prefix)).unwrap_or(key);
        let (key, shown) = match int(value) {
            Some(n) if key.ends_with("_ns") => (key.trim_end_matches("_ns"), duration(u64::try_from(n).unwrap_or(0))),
            Some(i64::MAX) if key.ends_with("_bytes") => (key.trim_end_matches("_bytes"), "none".into()),
            Some(n) if key.ends_with("_bytes") => (key.trim_end_matches("_bytes"), bytes(n)),
            _ => (key, text(value)),
        };
        out.push(format!("{key}={shown}"));
    }
    out.join(" ")
}

fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key)?.value.as_ref()
}

fn int(v: &AnyValue) -> Option<i64> {
    match v.value.as_ref()? {
        Value::IntValue(n) => Some(*n),
        _ => None,
    }
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(n)) => n.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `2026-05-01 17:00:05` (UTC).
pub fn date_time(unix_nano: u64) -> String {
    let t = crate::kernel::clock::rfc3339(unix_nano);
    t.get(..19).unwrap_or(&t).replace('T', " ")
}

pub fn seconds(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

/// `400ns`, `12.5us`, `3.250ms`, `1.500s`.
pub fn duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.3}ms", ns as f64 / 1e6),
        _ => seconds(ns),
    }
}

/// `12 MiB` (truncated, as gctrace prints), `640 KiB`, `512 B`.
pub fn bytes(n: i64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 => format!("{}KiB", n >> 10),
        n => format!("{n}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::testdata;

    fn stored() -> Stored {
        Stored::from_episode(&testdata::episode_with_every_child(), &NodeResource::default()).unwrap()
    }

    #[test]
    fn the_detail_and_the_file_render_alike() {
        // In memory, and after the round trip through a traces.jsonl line.
        let from_memory = render(&stored(), Path::new("/d/traces.jsonl"));
        let (resource, spans) = episode_batch(&testdata::episode_with_every_child(), &NodeResource::default());
        let line = file::json_line(&file::request(&resource, spans)).unwrap();
        let request: ExportTraceServiceRequest = serde_json::from_str(&line).unwrap();
        let from_file = Stored::from_request(request);
        assert_eq!(from_file.len(), 1);
        assert_eq!(render(&from_file[0], Path::new("/d/traces.jsonl")), from_memory);
    }

    #[test]
    fn the_timeline_is_in_time_order_with_figures() {
        let lines = render(&stored(), Path::new("/d/traces.jsonl"));
        let text = lines.join("\n");
        assert!(lines[0].starts_with(&format!("episode {} memory.pressure of checkout (pid 4242)", "ab".repeat(16))));
        assert!(text.contains("closed by oom_kill"), "{text}");
        assert!(text.contains("counts: memory_events.high=3 oom_kill=1 go.gc=301 "), "{text}");
        assert!(text.contains("workload: container.id=8b3f container.runtime.name=containerd"), "{text}");
        assert!(text.contains("trace: /d/traces.jsonl (trace id abab"), "{text}");
        let names: Vec<&str> = lines
            .iter()
            .skip_while(|l| !l.contains("timeline ("))
            .skip(1)
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(
            names,
            ["go.gc", "go.gc.folded", "go.assist", "memcg.throttle", "memcg.reclaim", "tcp.reset", "memcg.oom_kill"]
        );
        let gc = lines.iter().find(|l| l.contains(" go.gc ")).unwrap();
        assert!(gc.contains("cycle=17") && gc.contains("heap_goal=8MiB") && gc.contains("mark=400ns"), "{gc}");
        let throttle = lines.iter().find(|l| l.contains("memcg.throttle")).unwrap();
        assert!(throttle.contains("duration=2.000ms") && throttle.contains("nr_pages=64"), "{throttle}");
    }

    #[test]
    fn a_workloads_escape_sequences_are_shown_escaped() {
        let mut episode = testdata::episode_with_every_child();
        let mut w = (*episode.workload).clone();
        w.service_name = "evil\u{1b}]0;owned\u{7}".into();
        episode.workload = std::sync::Arc::new(w);
        let s = Stored::from_episode(&episode, &NodeResource::default()).unwrap();
        for l in render(&s, Path::new("/d")).iter().chain([s.summary().line()].iter()) {
            assert!(!l.chars().any(char::is_control), "{l:?}");
        }
        assert!(s.summary().line().contains("evil\\u{1b}]0;owned\\u{7}"));
        assert_eq!(Summary::of_closed(&episode).line(), s.summary().line(), "the list reads as the live view");
    }
}
