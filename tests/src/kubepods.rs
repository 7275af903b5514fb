//! Pods as a kubelet would have left them in the API server (`spec.nodeName`
//! set at creation, `status.containerStatuses[].containerID` patched in),
//! the agent's view of them (`GET /pods`), and a TCP relay to cut the
//! agent's connection to the API server at will.

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::kubeapi::KubeApi;

/// A pod owned by `owner` (`("ReplicaSet", "web-7d4b9c8f6")`), on `node`
/// (`None`: not scheduled), with one container `server`.
pub fn pod(name: &str, node: Option<&str>, owner: Option<(&str, &str)>, labels: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "server", "image": "registry.invalid/server:1"}]}
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    if let Some((kind, owner)) = owner {
        let api_version = if kind == "Job" { "batch/v1" } else { "apps/v1" };
        pod["metadata"]["ownerReferences"] = json!([{
            "apiVersion": api_version, "kind": kind, "name": owner,
            // Nothing checks it: no garbage collector runs.
            "uid": "00000000-0000-0000-0000-000000000001", "controller": true
        }]);
    }
    pod
}

/// Creates `pod` in `namespace`; returns its uid.
pub fn create_pod(api: &KubeApi, namespace: &str, pod: &Value) -> String {
    let created = api.create(&format!("/api/v1/namespaces/{namespace}/pods"), pod);
    created["metadata"]["uid"].as_str().unwrap_or_else(|| panic!("no uid: {created}")).to_string()
}

pub fn create_namespace(api: &KubeApi, name: &str) {
    api.create("/api/v1/namespaces", &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
}

/// A merge patch of a pod (`path` `""`) or of its status (`"/status"`).
pub fn patch_pod(api: &KubeApi, namespace: &str, name: &str, sub: &str, patch: &Value) {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{name}{sub}");
    let (status, body) = api.request("PATCH", &path, Some(patch));
    assert_eq!(status, 200, "PATCH {path}: {body}");
}

/// What a kubelet writes once the container runs: its id in the status.
pub fn set_container_id(api: &KubeApi, namespace: &str, name: &str, container: &str, id: &str) {
    let status = json!({"status": {"containerStatuses": [{
        "name": container, "containerID": format!("containerd://{id}"), "image": "registry.invalid/server:1",
        "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}
    }]}});
    patch_pod(api, namespace, name, "/status", &status);
}

pub fn delete_pod(api: &KubeApi, namespace: &str, name: &str) {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{name}?gracePeriodSeconds=0");
    let (status, body) = api.request("DELETE", &path, None);
    assert_eq!(status, 200, "DELETE {path}: {body}");
}

/// The API server's own answer: the (namespace, name, uid) of `node`'s pods, sorted.
pub fn pods_of_node(api: &KubeApi, node: &str) -> Vec<(String, String, String)> {
    let (status, list) = api.request("GET", &format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"), None);
    assert_eq!(status, 200, "listing the pods of {node}: {list}");
    let mut pods: Vec<_> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            let m = &p["metadata"];
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (s(&m["namespace"]), s(&m["name"]), s(&m["uid"]))
        })
        .collect();
    pods.sort();
    pods
}

/// The agent's `/pods`.
pub fn agent_pods(addr: SocketAddr) -> Value {
    let (status, body) = crate::scrape::get(addr, "/pods");
    assert_eq!(status, 200, "/pods: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/pods is not JSON ({e}): {body}"))
}

/// (namespace, name, uid) of the agent's `/pods`, sorted.
pub fn agent_pod_keys(pods: &Value) -> Vec<(String, String, String)> {
    let mut keys: Vec<_> = pods["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
            (s("namespace"), s("name"), s("uid"))
        })
        .collect();
    keys.sort();
    keys
}

/// Polls the agent's `/pods` until `done` holds; panics with the last
/// answer after `within` (a bound, stretched for the VM).
pub fn wait_for_pods(addr: SocketAddr, within: Duration, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + crate::bound(within);
    loop {
        let pods = agent_pods(addr);
        if done(&pods) {
            return pods;
        }
        assert!(Instant::now() < deadline, "the agent's /pods never showed {what} within {within:?}: {pods:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent's pod entry of `uid` in a `/pods` answer.
pub fn agent_pod<'a>(pods: &'a Value, uid: &str) -> Option<&'a Value> {
    pods["pods"].as_array()?.iter().find(|p| p["uid"] == uid)
}

/// A kubeconfig like `api.kubeconfig(token)` whose server is `server`.
pub fn kubeconfig_via(api: &KubeApi, token: &str, server: &str) -> PathBuf {
    let original = api.kubeconfig(token);
    let text = std::fs::read_to_string(&original).expect("the fixture's kubeconfig");
    let text = text.replace(&api.url(), server);
    let path = original.with_file_name(format!(
        "{}-via-{}",
        original.file_name().unwrap().to_string_lossy(),
        server.rsplit(':').next().unwrap()
    ));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// Compacts etcd's history up to its current revision: a watch from an
/// older resource version can then only be answered with 410 Gone.
pub fn compact_etcd(api: &KubeApi) {
    let post = |path: &str, body: &Value| -> Value {
        let out = crate::command::run_ok(
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", "-X", "POST", "-d"])
                .arg(body.to_string())
                .arg(format!("{}{path}", api.etcd_url())),
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("etcd {path} ({e}): {:?}", out))
    };
    // Any key will do: the header carries the store's revision.
    let range = post("/v3/kv/range", &json!({"key": "Lw==", "limit": 1}));
    let revision = range["header"]["revision"].as_str().unwrap_or_else(|| panic!("no revision: {range}")).to_string();
    let compacted = post("/v3/kv/compaction", &json!({"revision": revision, "physical": true}));
    assert!(compacted.get("error").is_none() && compacted.get("code").is_none(), "compaction: {compacted}");
}

/// A loopback TCP relay to `target`: every connection is piped both ways
/// until [`Relay::cut`] closes them all (and refuses new ones, by closing
/// them at once) until [`Relay::restore`].
pub struct Relay {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay listener");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("relay address");
        let open = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (o, l, s) = (open.clone(), live.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    Err(_) => continue,
                };
                let _ = client.set_nonblocking(false);
                if !o.load(Ordering::Relaxed) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let mut conns = l.lock().unwrap();
                conns.push(client.try_clone().expect("clone"));
                conns.push(server.try_clone().expect("clone"));
                pipe(client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                pipe(server, client);
            }
        });
        Relay { addr, open, live, stop }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::Relaxed);
        for c in self.live.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
