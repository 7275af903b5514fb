//! Walking OTLP JSON trace requests (`ExportTraceServiceRequest`, the
//! protobuf JSON mapping): what the collector's file exporter writes and
//! what the agent writes to its own `traces.jsonl`.
//!
//! In that mapping ids are hex strings, 64-bit integers (`intValue`,
//! `startTimeUnixNano`, …) are JSON strings, and enums may be numbers or
//! names; the accessors here take either form.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Attributes by key; each value is the OTLP `AnyValue` object as written
/// (`{"intValue":"5"}`, `{"stringValue":"x"}`, …). Use the typed accessors.
#[derive(Clone, Default, PartialEq)]
pub struct Attributes(pub BTreeMap<String, Value>);

impl Attributes {
    /// From an OTLP `attributes` array (`[{"key":…, "value":{…}}]`); absent → empty.
    pub fn from_otlp(list: &Value) -> Attributes {
        let map = list
            .as_array()
            .map(|kvs| {
                kvs.iter().filter_map(|kv| Some((kv["key"].as_str()?.to_string(), kv["value"].clone()))).collect()
            })
            .unwrap_or_default();
        Attributes(map)
    }

    /// The `AnyValue` of `key`, as written.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// A `stringValue`.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key)?.get("stringValue")?.as_str()
    }

    /// An `intValue` (a JSON string or number).
    pub fn i64(&self, key: &str) -> Option<i64> {
        int(self.get(key)?.get("intValue")?)
    }

    /// An `intValue` that is not negative.
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.i64(key).and_then(|v| u64::try_from(v).ok())
    }

    /// A `doubleValue`, or an `intValue` as a float.
    pub fn f64(&self, key: &str) -> Option<f64> {
        let v = self.get(key)?;
        v.get("doubleValue").and_then(Value::as_f64).or_else(|| self.i64(key).map(|i| i as f64))
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.get("boolValue")?.as_bool()
    }

    /// [`Attributes::str`], panicking with every attribute when absent.
    pub fn expect_str(&self, key: &str) -> &str {
        self.str(key).unwrap_or_else(|| panic!("no string attribute {key} in {self:?}"))
    }

    /// [`Attributes::u64`], panicking with every attribute when absent.
    pub fn expect_u64(&self, key: &str) -> u64 {
        self.u64(key).unwrap_or_else(|| panic!("no non-negative int attribute {key} in {self:?}"))
    }

    /// The value in a short, readable form (`"x"`, `5`, `1.5`, `true`, or the JSON).
    pub fn show(&self, key: &str) -> String {
        self.get(key).map(show_any).unwrap_or_else(|| "-".into())
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={}", show_any(v))?;
        }
        f.write_str("}")
    }
}

fn show_any(v: &Value) -> String {
    if let Some(s) = v.get("stringValue").and_then(Value::as_str) {
        return format!("{s:?}");
    }
    if let Some(i) = v.get("intValue").and_then(int) {
        return i.to_string();
    }
    if let Some(d) = v.get("doubleValue").and_then(Value::as_f64) {
        return d.to_string();
    }
    if let Some(b) = v.get("boolValue").and_then(Value::as_bool) {
        return b.to_string();
    }
    v.to_string()
}

/// A 64-bit integer as the JSON mapping writes it: a string, or a number.
pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn uint(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// A span's status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: StatusCode,
    pub message: String,
}

impl Status {
    fn from_otlp(v: &Value) -> Status {
        let code = match &v["code"] {
            Value::Number(n) if n.as_i64() == Some(1) => StatusCode::Ok,
            Value::Number(n) if n.as_i64() == Some(2) => StatusCode::Error,
            Value::String(s) if s == "STATUS_CODE_OK" => StatusCode::Ok,
            Value::String(s) if s == "STATUS_CODE_ERROR" => StatusCode::Error,
            _ => StatusCode::Unset,
        };
        Status { code, message: v["message"].as_str().unwrap_or_default().to_string() }
    }
}

#[derive(Debug, Clone)]
pub struct Link {
    pub trace_id: String,
    pub span_id: String,
    pub attributes: Attributes,
}

#[derive(Debug, Clone)]
pub struct SpanEvent {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: Attributes,
}

/// One span, its ids as lowercase hex (`parent_span_id` empty for a root).
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// The instrumentation scope's name.
    pub scope: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Attributes,
    pub status: Status,
    pub links: Vec<Link>,
    pub events: Vec<SpanEvent>,
}

impl Span {
    fn from_otlp(v: &Value, scope: &str) -> Span {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_ascii_lowercase();
        Span {
            name: v["name"].as_str().unwrap_or_default().to_string(),
            trace_id: s("traceId"),
            span_id: s("spanId"),
            parent_span_id: s("parentSpanId"),
            scope: scope.to_string(),
            start_unix_nano: uint(&v["startTimeUnixNano"]),
            end_unix_nano: uint(&v["endTimeUnixNano"]),
            attributes: Attributes::from_otlp(&v["attributes"]),
            status: Status::from_otlp(&v["status"]),
            links: v["links"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .map(|l| Link {
                            trace_id: l["traceId"].as_str().unwrap_or_default().to_ascii_lowercase(),
                            span_id: l["spanId"].as_str().unwrap_or_default().to_ascii_lowercase(),
                            attributes: Attributes::from_otlp(&l["attributes"]),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            events: v["events"]
                .as_array()
                .map(|es| {
                    es.iter()
                        .map(|e| SpanEvent {
                            name: e["name"].as_str().unwrap_or_default().to_string(),
                            time_unix_nano: uint(&e["timeUnixNano"]),
                            attributes: Attributes::from_otlp(&e["attributes"]),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
}

/// The spans of one resource in one request.
#[derive(Debug, Clone)]
pub struct ResourceSpans {
    pub resource: Attributes,
    pub spans: Vec<Span>,
}

/// Every `resourceSpans` entry of every request, in order.
pub fn resource_spans(requests: &[Value]) -> Vec<ResourceSpans> {
    let mut out = Vec::new();
    for request in requests {
        for rs in request["resourceSpans"].as_array().into_iter().flatten() {
            let resource = Attributes::from_otlp(&rs["resource"]["attributes"]);
            let mut spans = Vec::new();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                let scope = ss["scope"]["name"].as_str().unwrap_or_default();
                for span in ss["spans"].as_array().into_iter().flatten() {
                    spans.push(Span::from_otlp(span, scope));
                }
            }
            out.push(ResourceSpans { resource, spans });
        }
    }
    out
}

/// The spans of one trace id, with the resource they came with (the first
/// one seen: an episode's spans all share one).
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: String,
    pub resource: Attributes,
    pub spans: Vec<Span>,
}

impl Trace {
    /// The one span without a parent; panics (showing the trace) otherwise.
    pub fn root(&self) -> &Span {
        let roots: Vec<&Span> = self.spans.iter().filter(|s| s.is_root()).collect();
        match roots.as_slice() {
            [root] => root,
            _ => panic!("trace {} has {} root spans: {}", self.trace_id, roots.len(), self.summary()),
        }
    }

    /// The root span's name, if the trace has exactly one root.
    pub fn kind(&self) -> Option<&str> {
        let mut roots = self.spans.iter().filter(|s| s.is_root());
        let root = roots.next()?;
        roots.next().is_none().then_some(root.name.as_str())
    }

    /// The spans named `name`.
    pub fn spans_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Span> + 'a {
        self.spans.iter().filter(move |s| s.name == name)
    }

    /// Children of the root (direct ones) named `name`.
    pub fn children(&self, name: &str) -> Vec<&Span> {
        let root = self.root().span_id.clone();
        self.spans.iter().filter(|s| s.parent_span_id == root && s.name == name).collect()
    }

    /// One line for assertion messages: id, resource, root and its
    /// attributes, and the number of spans per name.
    pub fn summary(&self) -> String {
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.spans {
            *names.entry(s.name.as_str()).or_default() += 1;
        }
        let root = self.spans.iter().find(|s| s.is_root());
        format!(
            "trace {} resource {:?} root {} {:?} spans {:?}",
            self.trace_id,
            self.resource,
            root.map(|r| r.name.as_str()).unwrap_or("(none)"),
            root.map(|r| r.attributes.clone()).unwrap_or_default(),
            names
        )
    }
}

/// The requests' spans grouped by trace id, in the order each id first
/// appears.
pub fn traces(requests: &[Value]) -> Vec<Trace> {
    let mut out: Vec<Trace> = Vec::new();
    for rs in resource_spans(requests) {
        for span in rs.spans {
            match out.iter_mut().find(|t| t.trace_id == span.trace_id) {
                Some(t) => t.spans.push(span),
                None => out.push(Trace {
                    trace_id: span.trace_id.clone(),
                    resource: rs.resource.clone(),
                    spans: vec![span],
                }),
            }
        }
    }
    out
}

/// The traces whose root span is named `kind` (`tcp.reset.burst`, `memory.pressure`).
pub fn traces_of_kind(requests: &[Value], kind: &str) -> Vec<Trace> {
    traces(requests).into_iter().filter(|t| t.kind() == Some(kind)).collect()
}

/// Parses JSON lines, one value per line, tolerating a last line that is
/// only partly written (no newline after it yet). `what` names the source in
/// a panic about a broken line elsewhere.
pub fn parse_json_lines(text: &str, what: &str) -> Vec<Value> {
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.split('\n').collect();
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .filter_map(|(i, l)| match serde_json::from_str(l) {
            Ok(v) => Some(v),
            Err(_) if i == last && !complete => None,
            Err(e) => panic!("{what}:{}: not JSON ({e}): {l}", i + 1),
        })
        .collect()
}

/// Every line of a JSON-lines file ([`parse_json_lines`]); a missing file is
/// no line.
pub fn read_json_lines(path: &std::path::Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_json_lines(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},"scopeSpans":[{"scope":{"name":"observer"},"spans":[
        {"traceId":"0102030405060708090A0B0C0D0E0F10","spanId":"0000000000000001","name":"tcp.reset.burst","startTimeUnixNano":"10","endTimeUnixNano":"20","attributes":[{"key":"observer.count.tcp.reset.sent","value":{"intValue":"3"}},{"key":"ratio","value":{"doubleValue":0.5}},{"key":"ok","value":{"boolValue":true}}],"status":{"code":2,"message":"oom"},"links":[{"traceId":"aa","spanId":"bb"}]},
        {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0000000000000002","parentSpanId":"0000000000000001","name":"tcp.reset","attributes":[{"key":"network.peer.port","value":{"intValue":7001}}],"status":{}}
    ]}]}]}"#;

    #[test]
    fn walks_a_request() {
        let requests = parse_json_lines(&format!("{}\n", REQUEST.replace('\n', "")), "test");
        let rs = resource_spans(&requests);
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].resource.str("service.name"), Some("svc"));
        let t = &traces(&requests)[0];
        assert_eq!(t.spans.len(), 2, "ids compared in lowercase");
        let root = t.root();
        assert_eq!(root.name, "tcp.reset.burst");
        assert_eq!((root.start_unix_nano, root.end_unix_nano), (10, 20));
        assert_eq!(root.attributes.u64("observer.count.tcp.reset.sent"), Some(3));
        assert_eq!(root.attributes.f64("ratio"), Some(0.5));
        assert_eq!(root.attributes.bool("ok"), Some(true));
        assert_eq!(root.status, Status { code: StatusCode::Error, message: "oom".into() });
        assert_eq!(root.links[0].span_id, "bb");
        let child = t.children("tcp.reset");
        assert_eq!(child[0].attributes.i64("network.peer.port"), Some(7001), "a number is read too");
        assert_eq!(child[0].status.code, StatusCode::Unset);
        assert_eq!(traces_of_kind(&requests, "tcp.reset.burst").len(), 1);
        assert!(t.summary().contains("observer.count.tcp.reset.sent=3"), "{}", t.summary());
    }

    #[test]
    fn tolerates_a_partly_written_last_line() {
        assert_eq!(parse_json_lines("{\"a\":1}\n{\"b\":", "t").len(), 1);
        assert_eq!(parse_json_lines("{\"a\":1}\n\n{\"b\":2}\n", "t").len(), 2);
        assert_eq!(parse_json_lines("", "t").len(), 0);
    }

    #[test]
    #[should_panic(expected = "not JSON")]
    fn a_broken_complete_line_is_an_error() {
        parse_json_lines("{\"a\":\n{\"b\":2}\n", "t");
    }
}
