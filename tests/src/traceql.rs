//! The subset of TraceQL our dashboards use, parsed so a test can hold
//! each query against the traces the agent really exported: one spanset
//! filter `{ name … && cond && … }` (comparisons joined by `&&`), then
//! pipeline stages (`select(…)`, a metrics function with `by (…)`).
//!
//! Anything outside the subset (`||`, structural operators, a second
//! spanset, a regex beyond literal alternatives) is a parse error, so a
//! query the test cannot judge never passes unjudged.

use std::fmt;

use crate::otlp::{Attributes, Span, StatusCode, Trace};

/// Where an attribute is looked up: `span.x`, `resource.x`, or `.x` (either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Span,
    Resource,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub scope: Scope,
    pub name: String,
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scope {
            Scope::Span => write!(f, "span.{}", self.name),
            Scope::Resource => write!(f, "resource.{}", self.name),
            Scope::Any => write!(f, ".{}", self.name),
        }
    }
}

/// What a condition compares: an attribute or an intrinsic.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Attr(Attr),
    Name,
    Status,
    Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Match,
    NoMatch,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Status(StatusCode),
    /// A duration, in ns.
    Duration(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: Field,
    pub op: Op,
    pub value: Literal,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = match &self.field {
            Field::Attr(a) => a.to_string(),
            Field::Name => "name".into(),
            Field::Status => "status".into(),
            Field::Duration => "duration".into(),
        };
        write!(f, "{field} {:?} {:?}", self.op, self.value)
    }
}

/// A parsed query: the spanset filter's conditions, and the attributes the
/// pipeline shows or groups by (`select`, `by`, a metrics function's argument).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub conditions: Vec<Condition>,
    pub outputs: Vec<Attr>,
}

// ---------------------------------------------------------------------------
// Tokens.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Punct(&'static str),
    Ident(String),
    Str(String),
    Num(String),
}

const PUNCTS: &[&str] = &["&&", "||", "!=", "=~", "!~", ">=", "<=", ">>", "{", "}", "(", ")", ",", "|", "=", "<", ">"];

fn tokens(q: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut rest = q;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
        } else if c == '"' {
            let mut s = String::new();
            let mut chars = rest[1..].char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i + 2,
                    Some((_, '\\')) => s.push(chars.next().ok_or("unterminated string")?.1),
                    Some((_, c)) => s.push(c),
                    None => return Err(format!("unterminated string in {q:?}")),
                }
            };
            out.push(Tok::Str(s));
            rest = &rest[end..];
        } else if let Some(p) = PUNCTS.iter().find(|p| rest.starts_with(**p)) {
            out.push(Tok::Punct(p));
            rest = &rest[p.len()..];
        } else if c.is_ascii_digit() || (c == '.' && rest[1..].starts_with(|d: char| d.is_ascii_digit())) || c == '-' {
            let n = rest[1..].find(|d: char| !(d.is_ascii_alphanumeric() || d == '.')).map_or(rest.len(), |i| i + 1);
            out.push(Tok::Num(rest[..n].to_string()));
            rest = &rest[n..];
        } else if c.is_ascii_alphabetic() || c == '.' || c == '_' {
            let n = rest.find(|d: char| !(d.is_ascii_alphanumeric() || "._".contains(d))).unwrap_or(rest.len());
            out.push(Tok::Ident(rest[..n].to_string()));
            rest = &rest[n..];
        } else {
            return Err(format!("unexpected {c:?} in {q:?}"));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Parsing.

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Result<Tok, String> {
        let t = self.toks.get(self.at).cloned().ok_or("unexpected end")?;
        self.at += 1;
        Ok(t)
    }

    fn expect(&mut self, p: &str) -> Result<(), String> {
        match self.next()? {
            Tok::Punct(q) if q == p => Ok(()),
            other => Err(format!("expected {p:?}, found {other:?}")),
        }
    }

    fn eat(&mut self, p: &str) -> bool {
        let hit = matches!(self.peek(), Some(Tok::Punct(q)) if *q == p);
        self.at += usize::from(hit);
        hit
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            other => Err(format!("expected a name, found {other:?}")),
        }
    }

    fn condition(&mut self) -> Result<Condition, String> {
        let field = field(&self.ident()?)?;
        let op = match self.next()? {
            Tok::Punct("=") => Op::Eq,
            Tok::Punct("!=") => Op::Ne,
            Tok::Punct("<") => Op::Lt,
            Tok::Punct("<=") => Op::Le,
            Tok::Punct(">") => Op::Gt,
            Tok::Punct(">=") => Op::Ge,
            Tok::Punct("=~") => Op::Match,
            Tok::Punct("!~") => Op::NoMatch,
            other => return Err(format!("expected a comparison, found {other:?}")),
        };
        let value = match self.next()? {
            Tok::Str(s) => Literal::Str(s),
            Tok::Num(n) => number(&n)?,
            Tok::Ident(k) => match k.as_str() {
                "nil" => Literal::Nil,
                "true" => Literal::Bool(true),
                "false" => Literal::Bool(false),
                "error" => Literal::Status(StatusCode::Error),
                "ok" => Literal::Status(StatusCode::Ok),
                "unset" => Literal::Status(StatusCode::Unset),
                _ => return Err(format!("unknown value {k:?}")),
            },
            other => return Err(format!("expected a value, found {other:?}")),
        };
        if let (Op::Match | Op::NoMatch, Literal::Str(re)) = (op, &value) {
            alternatives(re)?;
        }
        Ok(Condition { field, op, value })
    }

    /// `(a, b, …)`: attributes (kept) and intrinsics or numbers (skipped).
    fn args(&mut self, outputs: &mut Vec<Attr>) -> Result<(), String> {
        self.expect("(")?;
        while !self.eat(")") {
            match self.next()? {
                Tok::Ident(i) => {
                    if let Field::Attr(a) = field(&i)? {
                        outputs.push(a);
                    }
                }
                Tok::Num(_) => {}
                other => return Err(format!("unexpected {other:?} in an argument list")),
            }
            if !self.eat(",") {
                self.expect(")")?;
                break;
            }
        }
        Ok(())
    }
}

fn field(ident: &str) -> Result<Field, String> {
    let attr = |scope, name: &str| match name.is_empty() {
        true => Err(format!("empty attribute name in {ident:?}")),
        false => Ok(Field::Attr(Attr { scope, name: name.to_string() })),
    };
    if let Some(name) = ident.strip_prefix("span.") {
        return attr(Scope::Span, name);
    }
    if let Some(name) = ident.strip_prefix("resource.") {
        return attr(Scope::Resource, name);
    }
    if let Some(name) = ident.strip_prefix('.') {
        return attr(Scope::Any, name);
    }
    match ident {
        "name" => Ok(Field::Name),
        "status" => Ok(Field::Status),
        "duration" => Ok(Field::Duration),
        _ => Err(format!("unknown field {ident:?} (scope attributes with span., resource. or .)")),
    }
}

fn number(n: &str) -> Result<Literal, String> {
    let units: [(&str, u64); 6] = [
        ("ns", 1),
        ("us", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    if let Ok(i) = n.parse::<i64>() {
        return Ok(Literal::Int(i));
    }
    if let Ok(f) = n.parse::<f64>() {
        return Ok(Literal::Float(f));
    }
    for (unit, ns) in units {
        if let Some(v) = n.strip_suffix(unit).and_then(|v| v.parse::<f64>().ok()) {
            return Ok(Literal::Duration((v * ns as f64) as u64));
        }
    }
    Err(format!("bad number {n:?}"))
}

/// A regex the subset allows: literal alternatives (`a|b`), where `.`
/// matches any one character and `\x` is `x`. TraceQL regexes are anchored.
fn alternatives(re: &str) -> Result<Vec<String>, String> {
    if let Some(c) = re.chars().find(|c| "*+?()[]{}^$".contains(*c)) {
        return Err(format!("regex {re:?}: {c:?} is outside the subset (literal alternatives only)"));
    }
    Ok(re.split('|').map(str::to_string).collect())
}

fn matches(re: &str, s: &str) -> bool {
    alternatives(re).unwrap_or_default().iter().any(|alt| {
        let mut pat = alt.chars();
        let mut text = s.chars();
        loop {
            match (pat.next(), text.next()) {
                (None, None) => return true,
                (Some('.'), Some(_)) => {}
                (Some('\\'), Some(t)) if pat.next() == Some(t) => {}
                (Some(p), Some(t)) if p == t && p != '\\' => {}
                _ => return false,
            }
        }
    })
}

/// Parses one query of the subset.
pub fn parse(q: &str) -> Result<Query, String> {
    let mut p = Parser { toks: tokens(q)?, at: 0 };
    p.expect("{")?;
    let mut conditions = Vec::new();
    if !p.eat("}") {
        loop {
            conditions.push(p.condition()?);
            if p.eat("}") {
                break;
            }
            p.expect("&&").map_err(|e| format!("{e} (only && joins conditions)"))?;
        }
    }
    let mut outputs = Vec::new();
    while p.eat("|") {
        let stage = p.ident()?;
        p.args(&mut outputs)?;
        if stage != "select" && matches!(p.peek(), Some(Tok::Ident(b)) if b == "by") {
            p.next()?;
            p.args(&mut outputs)?;
        }
    }
    if let Some(t) = p.peek() {
        return Err(format!("unexpected {t:?} after the pipeline in {q:?}"));
    }
    Ok(Query { conditions, outputs })
}

// ---------------------------------------------------------------------------
// Holding a query against traces.

/// The value of an attribute on a span (or its trace's resource).
fn lookup<'a>(a: &Attr, span: &'a Span, resource: &'a Attributes) -> Option<&'a serde_json::Value> {
    match a.scope {
        Scope::Span => span.attributes.get(&a.name),
        Scope::Resource => resource.get(&a.name),
        Scope::Any => span.attributes.get(&a.name).or_else(|| resource.get(&a.name)),
    }
}

fn order(op: Op, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => o == Equal,
        Op::Ne => o != Equal,
        Op::Lt => o == Less,
        Op::Le => o != Greater,
        Op::Gt => o == Greater,
        Op::Ge => o != Less,
        Op::Match | Op::NoMatch => false,
    }
}

/// Whether an OTLP `AnyValue` (or its absence) satisfies `op value`, as
/// Tempo compares: by type, a string never equal to a number.
fn compare(v: Option<&serde_json::Value>, op: Op, value: &Literal) -> bool {
    let Some(v) = v else { return op == Op::Eq && *value == Literal::Nil };
    if *value == Literal::Nil {
        return op == Op::Ne;
    }
    let num = v.get("intValue").and_then(crate::otlp::int).map(|i| i as f64).or_else(|| v["doubleValue"].as_f64());
    match value {
        Literal::Str(want) => {
            let Some(s) = v["stringValue"].as_str() else { return false };
            match op {
                Op::Match => matches(want, s),
                Op::NoMatch => !matches(want, s),
                _ => order(op, Ord::cmp(s, want.as_str())),
            }
        }
        Literal::Int(want) => match v.get("intValue").and_then(crate::otlp::int) {
            Some(i) => order(op, i.cmp(want)),
            None => num.and_then(|n| n.partial_cmp(&(*want as f64))).is_some_and(|o| order(op, o)),
        },
        Literal::Float(want) => num.and_then(|n| n.partial_cmp(want)).is_some_and(|o| order(op, o)),
        Literal::Bool(want) => v["boolValue"].as_bool().is_some_and(|b| order(op, b.cmp(want))),
        _ => false,
    }
}

/// Whether one span satisfies one condition.
pub fn holds(c: &Condition, span: &Span, resource: &Attributes) -> bool {
    match (&c.field, &c.value) {
        (Field::Attr(a), v) => compare(lookup(a, span, resource), c.op, v),
        (Field::Name, Literal::Str(want)) => match c.op {
            Op::Match => matches(want, &span.name),
            Op::NoMatch => !matches(want, &span.name),
            op => order(op, Ord::cmp(span.name.as_str(), want.as_str())),
        },
        (Field::Status, Literal::Status(want)) => match c.op {
            Op::Eq => span.status.code == *want,
            Op::Ne => span.status.code != *want,
            _ => false,
        },
        (Field::Duration, Literal::Duration(want)) => {
            order(c.op, span.end_unix_nano.saturating_sub(span.start_unix_nano).cmp(want))
        }
        _ => false,
    }
}

/// What the exported traces lack for `query` to show anything: empty when
/// it is satisfied. The query must name its spans (`name = …` or
/// `name =~ …`); then each condition must hold on some span of that name,
/// all of them on one span, and every attribute it shows or groups by must
/// be on such a span.
pub fn unmet(query: &Query, traces: &[Trace]) -> Vec<String> {
    let Some(by_name) = query.conditions.iter().find(|c| c.field == Field::Name && matches!(c.op, Op::Eq | Op::Match))
    else {
        return vec!["the query names no span (`name = \"…\"`): its attributes cannot be checked".into()];
    };
    let named: Vec<(&Span, &Attributes)> = traces
        .iter()
        .flat_map(|t| t.spans.iter().map(move |s| (s, &t.resource)))
        .filter(|(s, r)| holds(by_name, s, r))
        .collect();
    if named.is_empty() {
        return vec![format!("no span with {by_name}")];
    }
    let mut out = Vec::new();
    for c in query.conditions.iter().filter(|c| *c != by_name) {
        if !named.iter().any(|(s, r)| holds(c, s, r)) {
            let seen: Vec<String> = match &c.field {
                Field::Attr(a) => {
                    named.iter().filter_map(|(s, r)| lookup(a, s, r)).map(|v| v.to_string()).take(5).collect()
                }
                _ => Vec::new(),
            };
            out.push(format!("no span with {by_name} has {c} (values seen: {seen:?})"));
        }
    }
    let all: Vec<_> = named.iter().filter(|(s, r)| query.conditions.iter().all(|c| holds(c, s, r))).collect();
    if all.is_empty() {
        if out.is_empty() {
            out.push(format!("no one span with {by_name} meets every condition together"));
        }
        return out;
    }
    for a in &query.outputs {
        if !all.iter().any(|(s, r)| lookup(a, s, r).is_some()) {
            out.push(format!("no span meeting the conditions carries {a} (shown or grouped by)"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_filters_and_outputs() {
        let q = parse(
            r#"{ name =~ "memory.pressure|tcp.reset.burst" && resource.k8s.pod.uid != nil && span.observer.count.go.gc > 0 && status = error && duration > 1.5ms } | select(span.a, .b) | count_over_time() by (resource.service.name)"#,
        )
        .unwrap();
        assert_eq!(q.conditions.len(), 5);
        assert_eq!(q.conditions[1].field, Field::Attr(Attr { scope: Scope::Resource, name: "k8s.pod.uid".into() }));
        assert_eq!(q.conditions[1].value, Literal::Nil);
        assert_eq!(q.conditions[2].value, Literal::Int(0));
        assert_eq!(q.conditions[4].value, Literal::Duration(1_500_000));
        let shown: Vec<String> = q.outputs.iter().map(Attr::to_string).collect();
        assert_eq!(shown, ["span.a", ".b", "resource.service.name"]);
        let m = parse("{ name = \"x\" } | quantile_over_time(duration, .99) by (span.y)").unwrap();
        assert_eq!(m.outputs, vec![Attr { scope: Scope::Span, name: "y".into() }]);
    }

    #[test]
    fn refuses_what_it_cannot_judge() {
        for q in [
            r#"{ name = "a" || name = "b" }"#,
            r#"{ name = "a" } >> { name = "b" }"#,
            r#"{ name =~ "a.*" }"#,
            r#"{ foo = "a" }"#,
            r#"{ name = "a" } | select(span.x"#,
        ] {
            assert!(parse(q).is_err(), "{q} parsed");
        }
    }

    #[test]
    fn regex_alternatives_are_anchored() {
        assert!(matches("memory.pressure|tcp.reset.burst", "tcp.reset.burst"));
        assert!(!matches("memory.pressure", "memory.pressure.x"));
        assert!(matches(r"a\.b", "a.b") && !matches(r"a\.b", "axb"));
    }

    fn trace() -> Vec<Trace> {
        let line = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},"scopeSpans":[{"spans":[
            {"traceId":"01","spanId":"01","name":"memory.pressure","startTimeUnixNano":"0","endTimeUnixNano":"5000000","attributes":[{"key":"observer.count.go.gc","value":{"intValue":"3"}}],"status":{"code":2}}]}]}]}"#;
        crate::otlp::traces(&crate::otlp::parse_json_lines(&format!("{}\n", line.replace('\n', "")), "t"))
    }

    #[test]
    fn holds_queries_against_spans() {
        let ok = |q: &str| unmet(&parse(q).unwrap(), &trace());
        assert!(ok(r#"{ name = "memory.pressure" && span.observer.count.go.gc >= 3 && resource.service.name = "svc" && status = error && duration > 4ms } | select(.service.name)"#).is_empty());
        assert_eq!(ok(r#"{ name = "memory.pressure" && span.observer.count.go.gc > 3 }"#).len(), 1);
        assert_eq!(ok(r#"{ name = "memory.pressure" && span.observer.count.go.gc = "3" }"#).len(), 1, "types differ");
        assert_eq!(ok(r#"{ name = "memory.pressure" && span.service.name != nil }"#).len(), 1, "wrong scope");
        assert_eq!(ok(r#"{ name = "memory.pressure" } | select(span.nope)"#).len(), 1);
        assert_eq!(ok(r#"{ name = "go.gc" }"#).len(), 1);
        assert_eq!(ok(r#"{ span.observer.count.go.gc > 0 }"#).len(), 1, "a query must name its spans");
    }
}
