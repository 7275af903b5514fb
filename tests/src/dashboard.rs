//! The Grafana dashboards of `deploy/grafana/`, decoded strictly (every
//! field we write is declared, an unknown one is an error), with the
//! checks that make them importable as they are: unique panel ids, panels
//! inside the 24-column grid without overlapping, and every datasource
//! reference the dashboard's one datasource variable.
//!
//! The Tempo dashboard's queries are held against real traces by
//! [`unmet_episode_queries`]: on the host (`tests/tests/dashboards.rs`) or in
//! a VM with a cgroup-v2 memory controller (`tests/tests/episodes_vm.rs`),
//! each query by the environment [`EPISODE_PANELS`] gives it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::otlp::Trace;
use crate::traceql::{self, Field, Op};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dashboard {
    pub title: String,
    pub uid: String,
    pub description: String,
    pub tags: Vec<String>,
    pub schema_version: u32,
    pub version: u32,
    pub editable: bool,
    pub graph_tooltip: u8,
    pub time: TimeRange,
    pub refresh: String,
    pub templating: Templating,
    pub panels: Vec<Panel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Templating {
    pub list: Vec<Variable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Variable {
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub query: String,
    pub current: Value,
    pub datasource: Option<DatasourceRef>,
    pub refresh: Option<u8>,
    pub include_all: Option<bool>,
    pub multi: Option<bool>,
    pub all_value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Panel {
    pub id: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub description: String,
    pub grid_pos: GridPos,
    pub datasource: DatasourceRef,
    pub targets: Vec<Target>,
    pub field_config: Value,
    pub options: Value,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridPos {
    pub h: u32,
    pub w: u32,
    pub x: u32,
    pub y: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasourceRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub uid: String,
}

/// A Tempo (`queryType`, `query`, …) or Prometheus (`expr`, `legendFormat`) query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    pub ref_id: String,
    pub datasource: DatasourceRef,
    pub query_type: Option<String>,
    pub query: Option<String>,
    pub limit: Option<u32>,
    pub table_type: Option<String>,
    pub spss: Option<u32>,
    pub metrics_query_type: Option<String>,
    pub expr: Option<String>,
    pub legend_format: Option<String>,
}

/// The variable every datasource reference names.
pub const DATASOURCE_VARIABLE: &str = "${datasource}";

pub fn path(file: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana")).join(file)
}

/// Loads `deploy/grafana/<file>`, a dashboard for datasources of type
/// `ds_type`, and checks what Grafana needs to import and draw it; panics
/// naming the first problem.
pub fn load(file: &str, ds_type: &str) -> Dashboard {
    let p = path(file);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    let d: Dashboard = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let raw: Value = serde_json::from_str(&text).expect("parsed once already");
    assert!(!d.uid.is_empty() && d.uid.len() <= 40, "{file}: uid {:?} (1 to 40 characters)", d.uid);
    assert!(!d.title.is_empty(), "{file}: no title");
    assert!(d.schema_version >= 36, "{file}: schemaVersion {} (datasource refs as objects need 36+)", d.schema_version);
    assert!(!d.panels.is_empty(), "{file}: no panel");

    let ds_vars: Vec<&Variable> = d.templating.list.iter().filter(|v| v.kind == "datasource").collect();
    assert!(
        matches!(ds_vars.as_slice(), [v] if v.name == "datasource" && v.query == ds_type),
        "{file}: want one datasource variable `datasource` of type {ds_type}: {ds_vars:?}"
    );
    let want = DatasourceRef { kind: ds_type.into(), uid: DATASOURCE_VARIABLE.into() };
    // Every `datasource` object anywhere (panels, targets, variables, and
    // the free-form fieldConfig/options) is the variable.
    let mut refs = Vec::new();
    datasource_refs(&raw, &mut refs);
    for r in &refs {
        let r: DatasourceRef =
            serde_json::from_value((*r).clone()).unwrap_or_else(|e| panic!("{file}: datasource {r}: {e}"));
        assert_eq!(r, want, "{file}: a datasource reference that is not the variable");
    }
    assert!(refs.len() >= 2 * d.panels.len(), "{file}: panels or targets without a datasource");

    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for p in &d.panels {
        assert!(ids.insert(p.id), "{file}: panel id {} twice", p.id);
        assert!(titles.insert(p.title.as_str()), "{file}: panel title {:?} twice", p.title);
        let g = p.grid_pos;
        assert!(g.w > 0 && g.h > 0 && g.x + g.w <= 24, "{file}: panel {:?} outside the 24-column grid: {g:?}", p.title);
        assert!(!p.targets.is_empty(), "{file}: panel {:?} has no query", p.title);
        let mut refids = BTreeSet::new();
        for t in &p.targets {
            assert!(refids.insert(t.ref_id.as_str()), "{file}: panel {:?}: refId {} twice", p.title, t.ref_id);
            match ds_type {
                "tempo" => assert!(
                    t.query_type.as_deref() == Some("traceql") && t.query.is_some() && t.expr.is_none(),
                    "{file}: panel {:?}: a Tempo target is a TraceQL `query`",
                    p.title
                ),
                _ => assert!(
                    t.expr.is_some() && t.query.is_none(),
                    "{file}: panel {:?}: a Prometheus target is an `expr`",
                    p.title
                ),
            }
        }
    }
    for (i, a) in d.panels.iter().enumerate() {
        for b in &d.panels[i + 1..] {
            let (p, q) = (a.grid_pos, b.grid_pos);
            let apart = p.x + p.w <= q.x || q.x + q.w <= p.x || p.y + p.h <= q.y || q.y + q.h <= p.y;
            assert!(apart, "{file}: panels {:?} and {:?} overlap", a.title, b.title);
        }
    }
    d
}

fn datasource_refs<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "datasource" {
                    out.push(v);
                } else {
                    datasource_refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| datasource_refs(v, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// The episodes dashboard (Tempo).

pub const EPISODES: &str = "observer-episodes.json";
pub const AGENT: &str = "observer-agent.json";

/// Where a query's spans can be made: the host kernel (reset bursts, Go GC
/// pressure), or only a VM whose cgroup2 root has the memory controller
/// (memory.high, OOM kills, a kubepods cgroup tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    Host,
    Vm,
}

/// Each panel of the episodes dashboard, by title, and where its query is checked.
pub const EPISODE_PANELS: &[(&str, Env)] = &[
    ("Episodes by service", Env::Host),
    ("Episodes by pod", Env::Vm),
    ("Episodes of pods", Env::Vm),
    ("OOM kills", Env::Vm),
    ("TCP reset bursts", Env::Host),
    ("Resets sent", Env::Host),
    ("Worst memory.high throttling", Env::Vm),
    ("Throttling p99 by service", Env::Vm),
    ("Episodes over memory.high", Env::Vm),
    ("Go GC pressure", Env::Host),
    ("GC cycles under a memory limit", Env::Host),
    ("GC cycles and their heap goal", Env::Host),
];

/// The episodes dashboard, checked, with its table panels linking each
/// row to its trace and every panel claimed by exactly one [`Env`].
pub fn episodes() -> Dashboard {
    let d = load(EPISODES, "tempo");
    for p in &d.panels {
        let claims = EPISODE_PANELS.iter().filter(|(t, _)| *t == p.title).count();
        assert_eq!(claims, 1, "panel {:?} is claimed by {claims} entries of EPISODE_PANELS", p.title);
        if p.kind == "table" {
            // A flat span table: `traceIdHidden` is each row's trace id.
            assert!(p.targets.iter().all(|t| t.table_type.as_deref() == Some("spans")), "{:?}: tableType", p.title);
            let links = p.field_config["overrides"].to_string();
            assert!(
                links.contains(r#""id":"links""#) && links.contains("${__data.fields.traceIdHidden}"),
                "table {:?} has no data link to the row's trace: {links}",
                p.title
            );
        }
    }
    for (title, _) in EPISODE_PANELS {
        assert!(d.panels.iter().any(|p| p.title == *title), "EPISODE_PANELS names {title:?}, not a panel");
    }
    d
}

/// How the episodes dashboard's queries of one environment fared.
#[derive(Debug, Default)]
pub struct Checked {
    /// Titles of the panels whose queries the traces satisfy.
    pub met: Vec<String>,
    /// Panels skipped: their spans' signal is unavailable on this kernel.
    pub skipped: Vec<String>,
    /// What is missing, one line per problem, naming the panel and query.
    pub unmet: Vec<String>,
}

/// Holds every query [`EPISODE_PANELS`] gives to `env` against `traces`.
/// A query on spans named in `unavailable` (a signal this kernel cannot
/// give) that no trace has is skipped, not failed.
pub fn unmet_episode_queries(env: Env, traces: &[Trace], unavailable: &[&str]) -> Checked {
    let d = episodes();
    let mut out = Checked::default();
    for p in &d.panels {
        if !EPISODE_PANELS.contains(&(p.title.as_str(), env)) {
            continue;
        }
        let mut problems = Vec::new();
        let mut skip = false;
        for t in &p.targets {
            let text = t.query.as_deref().unwrap_or_default();
            let q = traceql::parse(text).unwrap_or_else(|e| panic!("panel {:?}: {e}: {text}", p.title));
            let names_unavailable = q.conditions.iter().any(|c| {
                c.field == Field::Name
                    && c.op == Op::Eq
                    && unavailable.iter().any(|u| matches!(&c.value, traceql::Literal::Str(s) if s == u))
            });
            let found = traceql::unmet(&q, traces);
            skip |= names_unavailable && found.iter().any(|f| f.starts_with("no span with name"));
            problems.extend(found.into_iter().map(|f| format!("panel {:?} ({text}): {f}", p.title)));
        }
        match (skip, problems.is_empty()) {
            (true, _) => out.skipped.push(p.title.clone()),
            (false, true) => out.met.push(p.title.clone()),
            (false, false) => out.unmet.extend(problems),
        }
    }
    out
}
