//! The agent's Kubernetes client against a real kube-apiserver (the
//! `kubeapi` fixture; no kubelet: the test writes what one would). Its view
//! (`GET /pods`) is compared with the API server's own list of the node's
//! pods: only node-a's pods, adds, label and annotation changes (a new
//! `service.name`), a container id patched in later, deletes; a watch cut
//! and expired (etcd compacted past it, the server's watch cache started
//! afresh) ends in a re-list that is exactly right; a stopped API server or a
//! token without rights costs the metadata only (one warning,
//! `observer_kube_api_up 0`), and the agent recovers.
//!
//! No process on this host can be in a kubepods cgroup, so the match of a
//! pod to a workload's cgroup is `kube_vm.rs`'s.

use std::time::{Duration, Instant};

use observer_e2e::kubeapi::{KubeApi, require_kube_apiserver};
use observer_e2e::kubepods::{
    Relay, agent_pod, agent_pod_keys, agent_pods, compact_etcd, create_namespace, create_pod, delete_pod,
    kubeconfig_via, patch_pod, pod, pods_of_node, set_container_id, wait_for_pods,
};
use observer_e2e::observer::Observer;
use observer_e2e::require::require_root_and_bin;
use observer_e2e::scrape::{get, samples, sum};
use serde_json::json;

/// From a change in the API server to the agent's view.
const SEEN_WITHIN: Duration = Duration::from_secs(30);
/// Through the watcher's backoff (at most 30 s between tries).
const RECOVERED_WITHIN: Duration = Duration::from_secs(90);
const WARNING: &str = "kubernetes: cannot watch the pods of node node-a";

fn agent_args(kubeconfig: &std::path::Path) -> Vec<String> {
    ["--kubernetes", "on", "--kubeconfig", kubeconfig.to_str().unwrap(), "--node-name", "node-a"]
        .map(String::from)
        .to_vec()
}

fn start_agent(bin: &std::path::Path, kubeconfig: &std::path::Path) -> Observer {
    let args = agent_args(kubeconfig);
    let started = Instant::now();
    let agent = Observer::start_with(bin, &args.iter().map(String::as_str).collect::<Vec<_>>());
    eprintln!("agent ready {:.2?} after its start", started.elapsed());
    agent
}

fn metric(agent: &Observer, name: &str) -> f64 {
    let (status, body) = get(agent.metrics_addr(), "/metrics");
    assert_eq!(status, 200, "/metrics: {body}");
    sum(&samples(&body), name, &[])
}

fn wait_for_metric(agent: &Observer, name: &str, want: f64, within: Duration) {
    let deadline = Instant::now() + observer_e2e::bound(within);
    loop {
        let value = metric(agent, name);
        if value == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {value}, not {want}, after {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The agent's pods are exactly the API server's pods of node-a.
fn wait_until_exact(agent: &Observer, api: &KubeApi, what: &str) -> serde_json::Value {
    let truth = pods_of_node(api, "node-a");
    let pods = wait_for_pods(agent.metrics_addr(), SEEN_WITHIN, what, |p| agent_pod_keys(p) == truth);
    // Published with the other metrics, once a second.
    wait_for_metric(agent, "observer_kube_pods", truth.len() as f64, SEEN_WITHIN);
    pods
}

fn warnings(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.contains(WARNING)).count()
}

#[test]
fn the_agent_knows_exactly_the_pods_of_its_node() {
    let Some(bin) = require_root_and_bin() else { return };
    if require_kube_apiserver().is_none() {
        return;
    }
    let api = KubeApi::start();
    create_namespace(&api, "shop");
    let hash = json!({"pod-template-hash": "7d4b9c8f6"});
    // Before the agent starts: its first list has it.
    let web = create_pod(
        &api,
        "shop",
        &pod("web-7d4b9c8f6-x2x4z", Some("node-a"), Some(("ReplicaSet", "web-7d4b9c8f6")), hash),
    );
    create_pod(&api, "shop", &pod("other-node", Some("node-b"), Some(("ReplicaSet", "web-7d4b9c8f6")), json!({})));
    create_pod(&api, "shop", &pod("unscheduled", None, None, json!({})));
    let mut agent = start_agent(&bin, &api.kubeconfig(&api.admin_token()));
    let listed = agent.wait_for_stderr("observer: kubernetes: ", observer_e2e::bound(SEEN_WITHIN));
    eprintln!("{listed}");
    assert!(listed.contains("1 pods of node node-a listed"), "{listed}");
    let pods = wait_until_exact(&agent, &api, "the pod created before it started");
    let p = agent_pod(&pods, &web).expect("web");
    assert_eq!((p["owner_kind"].as_str(), p["owner_name"].as_str()), (Some("deployment"), Some("web")));
    assert_eq!(p["node"], "node-a");
    assert_eq!(p["service_name"], "web", "no annotation or app label: the deployment's name");
    assert_eq!(p["containers"], json!({}), "no container id in the status yet");
    wait_for_metric(&agent, "observer_kube_api_up", 1.0, SEEN_WITHIN);

    // Added while it runs: a StatefulSet's pod on node-a, one of node-b.
    let db = create_pod(&api, "default", &pod("db-0", Some("node-a"), Some(("StatefulSet", "db")), json!({})));
    create_pod(&api, "default", &pod("db-1", Some("node-b"), Some(("StatefulSet", "db")), json!({})));
    let pods = wait_until_exact(&agent, &api, "db-0 added");
    assert_eq!(agent_pod(&pods, &db).unwrap()["owner_kind"], "statefulset");

    // A label, then the annotation: service.name follows the precedence.
    patch_pod(
        &api,
        "shop",
        "web-7d4b9c8f6-x2x4z",
        "",
        &json!({"metadata": {"labels": {"app.kubernetes.io/name": "web-app"}}}),
    );
    let service = |pods: &serde_json::Value| agent_pod(pods, &web).map(|p| p["service_name"].clone());
    wait_for_pods(agent.metrics_addr(), SEEN_WITHIN, "the name label", |p| service(p) == Some(json!("web-app")));
    patch_pod(
        &api,
        "shop",
        "web-7d4b9c8f6-x2x4z",
        "",
        &json!({"metadata": {"labels": {"app.kubernetes.io/instance": "web-prod"}}}),
    );
    wait_for_pods(agent.metrics_addr(), SEEN_WITHIN, "the instance label", |p| service(p) == Some(json!("web-prod")));
    let annotation = json!({"metadata": {"annotations": {"resource.opentelemetry.io/service.name": "checkout"}}});
    patch_pod(&api, "shop", "web-7d4b9c8f6-x2x4z", "", &annotation);
    wait_for_pods(agent.metrics_addr(), SEEN_WITHIN, "the annotation", |p| service(p) == Some(json!("checkout")));

    // The kubelet writes the container id once the container runs.
    let id = "c0ffee".repeat(10) + "abcd";
    set_container_id(&api, "shop", "web-7d4b9c8f6-x2x4z", "server", &id);
    let pods = wait_for_pods(agent.metrics_addr(), SEEN_WITHIN, "the container id", |p| {
        agent_pod(p, &web).is_some_and(|p| p["containers"] == json!({&id: "server"}))
    });
    assert_eq!(agent_pod(&pods, &web).unwrap()["labels"]["app.kubernetes.io/instance"], "web-prod");

    delete_pod(&api, "default", "db-0");
    wait_until_exact(&agent, &api, "db-0 deleted");
    let stopped = agent.stop();
    assert_eq!(warnings(&stopped.stderr), 0, "no warning while the API server answered: {:#?}", stopped.stderr);
}

#[test]
fn a_watch_cut_and_expired_ends_in_an_exact_relist() {
    let Some(bin) = require_root_and_bin() else { return };
    if require_kube_apiserver().is_none() {
        return;
    }
    let mut api = KubeApi::start();
    let server = api.url().trim_start_matches("https://").parse().expect("the API server's address");
    let relay = Relay::start(server);
    for name in ["a", "b", "c"] {
        create_pod(&api, "default", &pod(name, Some("node-a"), None, json!({})));
    }
    let agent = start_agent(&bin, &kubeconfig_via(&api, &api.admin_token(), &relay.url()));
    wait_until_exact(&agent, &api, "a, b and c");
    let relists = metric(&agent, "observer_kube_relists_total");

    relay.cut();
    delete_pod(&api, "default", "a");
    create_pod(&api, "default", &pod("d", Some("node-a"), None, json!({})));
    patch_pod(&api, "default", "b", "", &json!({"metadata": {"labels": {"app.kubernetes.io/name": "bee"}}}));
    // The watch's resource version is gone from etcd, and from the API
    // server's watch cache, which a restart starts afresh: it can only be
    // answered with 410 Gone, and the agent must list again.
    compact_etcd(&api);
    api.restart();
    relay.restore();

    let pods = wait_until_exact(&agent, &api, "b, c and d after the re-list");
    let b = pods["pods"].as_array().unwrap().iter().find(|p| p["name"] == "b").unwrap();
    assert_eq!(b["service_name"], "bee");
    // One expiry, one re-list.
    wait_for_metric(&agent, "observer_kube_relists_total", relists + 1.0, SEEN_WITHIN);
    wait_for_metric(&agent, "observer_kube_api_up", 1.0, RECOVERED_WITHIN);
    agent.stop();
}

#[test]
fn a_stopped_api_server_costs_the_metadata_only_until_it_is_back() {
    let Some(bin) = require_root_and_bin() else { return };
    if require_kube_apiserver().is_none() {
        return;
    }
    let mut api = KubeApi::start();
    create_pod(&api, "default", &pod("before", Some("node-a"), None, json!({})));
    let mut agent = start_agent(&bin, &api.kubeconfig(&api.admin_token()));
    wait_until_exact(&agent, &api, "the pod");

    api.stop();
    let warning = agent.wait_for_stderr(WARNING, observer_e2e::bound(SEEN_WITHIN));
    eprintln!("{warning}");
    wait_for_metric(&agent, "observer_kube_api_up", 0.0, SEEN_WITHIN);
    // It keeps retrying (errors counted), warns no more, and stays ready.
    let errors = metric(&agent, "observer_kube_watch_errors_total");
    let deadline = Instant::now() + observer_e2e::bound(SEEN_WITHIN);
    while metric(&agent, "observer_kube_watch_errors_total") < errors + 2.0 {
        assert!(Instant::now() < deadline, "no retries counted");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(agent.is_running());
    assert_eq!(get(agent.metrics_addr(), "/readyz"), (200, "ready\n".to_string()), "/readyz needs no API server");
    assert_eq!(agent_pod_keys(&agent_pods(agent.metrics_addr())).len(), 1, "the last view is kept");

    api.restart();
    agent.wait_for_stderr("answers again", observer_e2e::bound(RECOVERED_WITHIN));
    wait_for_metric(&agent, "observer_kube_api_up", 1.0, SEEN_WITHIN);
    create_pod(&api, "default", &pod("after", Some("node-a"), None, json!({})));
    wait_until_exact(&agent, &api, "the pod created after the restart");
    let stopped = agent.stop();
    assert_eq!(warnings(&stopped.stderr), 1, "one warning for the outage: {:#?}", stopped.stderr);
}

#[test]
fn a_token_without_rights_costs_the_metadata_only_with_a_clear_warning() {
    let Some(bin) = require_root_and_bin() else { return };
    if require_kube_apiserver().is_none() {
        return;
    }
    let api = KubeApi::start();
    create_pod(&api, "default", &pod("p", Some("node-a"), None, json!({})));
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "observer"}});
    api.create("/api/v1/namespaces/default/serviceaccounts", &account);
    let token = api.service_account_token("default", "observer");
    let mut agent = start_agent(&bin, &api.kubeconfig(&token));
    let warning = agent.wait_for_stderr(WARNING, observer_e2e::bound(SEEN_WITHIN));
    eprintln!("{warning}");
    assert!(warning.contains("forbidden (HTTP 403") && warning.contains("list and watch"), "{warning}");
    wait_for_metric(&agent, "observer_kube_api_up", 0.0, SEEN_WITHIN);
    assert_eq!(agent_pod_keys(&agent_pods(agent.metrics_addr())), vec![], "nothing may be listed");
    assert!(agent.is_running());

    // Granted the rights the Helm chart gives it: the next retry lists.
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "observer"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    });
    api.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", &role);
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "observer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "observer"},
        "subjects": [{"kind": "ServiceAccount", "name": "observer", "namespace": "default"}]
    });
    api.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", &binding);
    let truth = pods_of_node(&api, "node-a");
    wait_for_pods(agent.metrics_addr(), RECOVERED_WITHIN, "the pods once allowed", |p| agent_pod_keys(p) == truth);
    wait_for_metric(&agent, "observer_kube_api_up", 1.0, SEEN_WITHIN);
    let stopped = agent.stop();
    assert_eq!(warnings(&stopped.stderr), 1, "one warning: {:#?}", stopped.stderr);
}

#[test]
fn kubernetes_on_without_an_api_server_is_a_start_error() {
    let Some(bin) = require_root_and_bin() else { return };
    let out = std::process::Command::new(&bin)
        .args(["run", "--kubernetes", "on", "--listen", "none", "--duration", "1s"])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("OBSERVER_KUBECONFIG")
        .output()
        .expect("running observer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--kubernetes on: no Kubernetes API server to reach"), "{stderr}");
    let dir = tempfile::tempdir().expect("output directory");
    let missing = std::process::Command::new(&bin)
        .args(["run", "--kubernetes", "on", "--kubeconfig", "/nonexistent/kubeconfig", "--listen", "none"])
        .args(["--output-dir", dir.path().to_str().unwrap(), "--duration", "1s"])
        .output()
        .expect("running observer");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/kubeconfig"), "names the file: {stderr}");
}
