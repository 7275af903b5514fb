//! The Helm chart in `deploy/helm/observer`, rendered by the real helm
//! (pinned, built by `cargo xtask setup`), and its objects sent as they are
//! (YAML) to a real API server, which decodes and validates them.
//!
//! Nothing here parses YAML: each rendered document's `apiVersion` and
//! `kind` are its top-level lines, the server's discovery says which
//! resource and scope that kind is, and the server answers in JSON.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::command::output_within;
use crate::kubeapi::KubeApi;
use crate::require;

/// The environment variable naming the helm binary.
pub const ENV: &str = "OBSERVER_HELM";
/// The release and namespace of `deploy/manifests/observer.yaml` (and of
/// the tests' renders).
pub const RELEASE: &str = "observer";
pub const NAMESPACE: &str = "observer";
/// The Kubernetes version `helm template` renders for: the tests' API
/// server's (the chart needs 1.30+, helm's offline default is 1.20).
pub const KUBE_VERSION: &str = "1.37.2";
const HELM_WITHIN: Duration = Duration::from_secs(60);

/// The helm binary, or `None` after reporting why the test is skipped.
pub fn require_helm() -> Option<PathBuf> {
    require::require_file_env(ENV, "`cargo xtask setup` builds it and `cargo xtask test` sets it")
}

pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/observer")
}

/// The committed plain manifests: the chart's defaults rendered.
pub fn manifests_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/manifests/observer.yaml")
}

/// The values sets the chart is tested with (`ci/*.yaml`), sorted.
pub fn values_sets() -> Vec<PathBuf> {
    let dir = chart_dir().join("ci");
    let mut sets: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("ci/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    sets.sort();
    sets
}

/// Runs helm with `args`; its output whatever the exit status.
pub fn helm(bin: &Path, args: &[&str]) -> Output {
    // A home of its own: helm would otherwise create its cache and config
    // directories under the user's.
    let home = tempfile::tempdir().expect("helm's home");
    output_within(
        Command::new(bin)
            .args(args)
            .env("HELM_CACHE_HOME", home.path().join("cache"))
            .env("HELM_CONFIG_HOME", home.path().join("config"))
            .env("HELM_DATA_HOME", home.path().join("data")),
        HELM_WITHIN,
    )
}

/// `helm template` of the chart with these values files and `--set`s; panics
/// with helm's error when it fails.
pub fn render(bin: &Path, values: &[&Path], sets: &[&str]) -> String {
    let out = helm(bin, &template_args(values, sets).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("helm's output is UTF-8")
}

/// The arguments of `helm template` for the tests' release.
pub fn template_args(values: &[&Path], sets: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["template", RELEASE].map(String::from).to_vec();
    args.push(chart_dir().display().to_string());
    args.extend(["--namespace", NAMESPACE, "--kube-version", KUBE_VERSION].map(String::from));
    for v in values {
        args.extend(["--values".to_string(), v.display().to_string()]);
    }
    for s in sets {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    args
}

/// One rendered object: its YAML text and its type.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub api_version: String,
    pub kind: String,
    pub yaml: String,
}

/// The documents of a multi-document YAML stream (helm's output), those
/// with a kind only.
pub fn split(rendered: &str) -> Vec<Manifest> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in rendered.lines().chain(std::iter::once("---")) {
        if line == "---" {
            if let Some(doc) = manifest(&current) {
                docs.push(doc);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

fn manifest(yaml: &str) -> Option<Manifest> {
    // Top-level keys start at column 0; nothing nested or in a block scalar does.
    let top = |key: &str| {
        yaml.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    Some(Manifest { api_version: top("apiVersion")?, kind: top("kind")?, yaml: yaml.to_string() })
}

/// Where objects of this type are created: the collection path, in
/// `namespace` when the server's discovery says the kind is namespaced.
pub fn collection_path(api: &KubeApi, api_version: &str, kind: &str, namespace: &str) -> String {
    let base = match api_version {
        "v1" => "/api/v1".to_string(),
        group_version => format!("/apis/{group_version}"),
    };
    let (status, list) = api.request("GET", &base, None);
    assert_eq!(status, 200, "discovery of {base}: {list}");
    let resource = list["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["kind"] == kind && !r["name"].as_str().unwrap_or("/").contains('/'))
        .unwrap_or_else(|| panic!("the server serves no {kind} in {api_version}: {list}"));
    let plural = resource["name"].as_str().expect("resource name");
    match resource["namespaced"].as_bool() {
        Some(true) => format!("{base}/namespaces/{namespace}/{plural}"),
        _ => format!("{base}/{plural}"),
    }
}

/// POSTs the manifest's YAML as the admin to its collection (in `namespace`
/// when namespaced) with `query` (e.g. `dryRun=All&fieldValidation=Strict`);
/// the status and the server's JSON answer.
pub fn post(api: &KubeApi, m: &Manifest, namespace: &str, query: &str) -> (u16, Value) {
    let path = collection_path(api, &m.api_version, &m.kind, namespace);
    let url = format!("{}{path}?{query}", api.url());
    post_yaml(api, &url, &m.yaml)
}

fn post_yaml(api: &KubeApi, url: &str, yaml: &str) -> (u16, Value) {
    let mut child = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-X", "POST", "--cacert"])
        .arg(api.ca_cert())
        .args(["-H", &format!("Authorization: Bearer {}", api.admin_token())])
        .args(["-H", "Content-Type: application/yaml", "-H", "Accept: application/json"])
        .args(["--data-binary", "@-", "-w", "\n%{http_code}", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running curl: {e}"));
    child.stdin.take().expect("stdin").write_all(yaml.as_bytes()).expect("writing the request body");
    let out = child.wait_with_output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = status.trim().parse().unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
