//! A real Kubernetes API server for the tests: kube-apiserver (pinned,
//! built by `cargo xtask setup`) over Debian's etcd, both on loopback ports
//! of their own, in a temporary directory that goes away with them.
//!
//! No kubelet and no controllers run: a test writes what they would have
//! (a pod's `spec.nodeName`, its `status.containerStatuses`). Authentication
//! is a static token file (an admin in `system:masters`) plus service-account
//! tokens the server signs itself; authorization is RBAC, so what a
//! ServiceAccount may do is exactly what its roles grant.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::collector::free_port;
use crate::command::{run_ok, wait_within};
use crate::require;
use crate::tls::TestPki;

/// The environment variable naming the kube-apiserver binary.
pub const ENV: &str = "OBSERVER_KUBE_APISERVER";
const ETCD: &str = "etcd";
const ADMIN: &str = "observer-test-admin";
const READY_WITHIN: Duration = Duration::from_secs(90);
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// The kube-apiserver binary (and Debian's etcd beside it), or `None` after
/// reporting why the test is skipped (a failure under `OBSERVER_E2E_REQUIRED=1`).
pub fn require_kube_apiserver() -> Option<PathBuf> {
    let bin = require::require_file_env(ENV, "`cargo xtask setup` builds it and `cargo xtask test` sets it")?;
    if Command::new(ETCD).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return require::skip("`etcd` is not on PATH (Debian's etcd-server; `cargo xtask setup` installs it)");
    }
    Some(bin)
}

/// etcd and kube-apiserver, running. Dropping it stops both.
pub struct KubeApi {
    bin: PathBuf,
    dir: TempDir,
    pki: TestPki,
    etcd: Child,
    etcd_port: u16,
    apiserver: Option<Child>,
    port: u16,
    admin_token: String,
}

impl KubeApi {
    /// Starts etcd, then kube-apiserver, and waits until the server says
    /// it is ready. Panics with the server's log when it does not come up.
    pub fn start() -> KubeApi {
        let bin = require_kube_apiserver().expect("kube-apiserver (call require_kube_apiserver first)");
        let dir = tempfile::tempdir().expect("temporary directory for the API server");
        let d = dir.path();
        let admin_token = format!("admin-{}", std::process::id());
        // token,user,uid,"groups"
        fs::write(d.join("tokens.csv"), format!("{admin_token},{ADMIN},{ADMIN},\"system:masters\"\n"))
            .expect("writing the token file");
        run_ok(Command::new("openssl").args(["genrsa", "-out"]).arg(d.join("sa.key")).arg("2048"));
        run_ok(
            Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(d.join("sa.key"))
                .arg("-out")
                .arg(d.join("sa.pub")),
        );
        let etcd_port = free_port();
        let etcd = start_etcd(d, etcd_port);
        let mut api = KubeApi {
            bin,
            pki: TestPki::create(),
            dir,
            etcd,
            etcd_port,
            apiserver: None,
            port: free_port(),
            admin_token,
        };
        api.wait_for_etcd();
        api.restart();
        api
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The CA that signed the server's certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.pki.ca_cert()
    }

    pub fn admin_token(&self) -> String {
        self.admin_token.clone()
    }

    /// etcd's client URL (its v3 JSON gateway answers under `/v3/`).
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }

    /// A kubeconfig file for `token`, in the fixture's directory.
    pub fn kubeconfig(&self, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("kubeconfig-{:x}", fnv(token)));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    \
             certificate-authority: {}\nusers:\n- name: test\n  user:\n    token: {token}\ncontexts:\n\
             - name: test\n  context:\n    cluster: test\n    user: test\ncurrent-context: test\n",
            self.url(),
            self.ca_cert().display()
        );
        fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// A request as the admin: the HTTP status and the decoded body (`Null`
    /// when it is not JSON).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.request_as(&self.admin_token, method, path, body)
    }

    /// A request with `token`. PATCH bodies are JSON merge patches.
    pub fn request_as(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let content_type = if method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
        curl(
            Command::new("curl")
                .args(["-sS", "--max-time", "30", "-X", method, "--cacert"])
                .arg(self.ca_cert())
                .args(["-H", &format!("Authorization: Bearer {token}")])
                .args(["-H", &format!("Content-Type: {content_type}")])
                .arg(format!("{}{path}", self.url())),
            body,
        )
    }

    /// POST `obj` to `path` as the admin; panics unless the server accepts it.
    pub fn create(&self, path: &str, obj: &Value) -> Value {
        let (status, body) = self.request("POST", path, Some(obj));
        assert!((200..300).contains(&status), "POST {path}: HTTP {status}: {body}");
        body
    }

    /// A token for an existing ServiceAccount, from the TokenRequest API.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let request = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600}
        });
        let body = self.create(&format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"), &request);
        body["status"]["token"].as_str().unwrap_or_else(|| panic!("TokenRequest gave no token: {body}")).to_owned()
    }

    /// Stops kube-apiserver (etcd and its data stay).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            stop_child(&mut child, "kube-apiserver");
        }
    }

    /// Starts kube-apiserver (again) on the same port over the same etcd and
    /// waits until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        let d = self.dir.path();
        let log = fs::File::create(d.join("apiserver.log")).expect("apiserver log");
        let child = Command::new(&self.bin)
            .arg(format!("--etcd-servers={}", self.etcd_url()))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={}", self.port))
            .arg(format!("--cert-dir={}", d.join("certs").display()))
            .arg(format!("--tls-cert-file={}", self.pki.server_cert().display()))
            .arg(format!("--tls-private-key-file={}", self.pki.server_key().display()))
            .arg(format!("--token-auth-file={}", d.join("tokens.csv").display()))
            .arg(format!("--service-account-key-file={}", d.join("sa.pub").display()))
            .arg(format!("--service-account-signing-key-file={}", d.join("sa.key").display()))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg("--authorization-mode=RBAC")
            // No controller manager creates the `default` ServiceAccounts
            // the admission plugin would require of every pod.
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            // No kube-proxy or kubelet: nothing reconciles the `kubernetes`
            // Service's endpoints.
            .arg("--endpoint-reconciler-type=none")
            .arg("--allow-privileged=true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.apiserver = Some(child);
        self.wait_until_ready();
    }

    /// The server's log so far (for a failure message).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + crate::bound(READY_WITHIN);
        loop {
            let (status, _) = self.request("GET", "/readyz", None);
            if status == 200 {
                return;
            }
            if let Some(child) = self.apiserver.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                panic!("kube-apiserver exited with {exit} before it was ready; its log:\n{}", tail(&self.log(), 40));
            }
            if Instant::now() > deadline {
                panic!("kube-apiserver not ready within {READY_WITHIN:?}; its log:\n{}", tail(&self.log(), 40));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn wait_for_etcd(&mut self) {
        let deadline = Instant::now() + crate::bound(READY_WITHIN);
        loop {
            let (status, body) =
                curl(Command::new("curl").args(["-sS", "--max-time", "5"]).arg(self.etcd_url() + "/health"), None);
            if status == 200 && body["health"] == "true" {
                return;
            }
            if let Ok(Some(exit)) = self.etcd.try_wait() {
                let log = fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                panic!("etcd exited with {exit}; its log:\n{}", tail(&log, 30));
            }
            assert!(Instant::now() < deadline, "etcd not healthy within {READY_WITHIN:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop();
        stop_child(&mut self.etcd, "etcd");
    }
}

fn start_etcd(dir: &Path, client_port: u16) -> Child {
    let peer = format!("http://127.0.0.1:{}", free_port());
    let client = format!("http://127.0.0.1:{client_port}");
    let log = fs::File::create(dir.join("etcd.log")).expect("etcd log");
    Command::new(ETCD)
        .args(["--name", "test", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("test={peer}")])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting etcd: {e}"))
}

/// Runs a prepared curl with `body` on stdin; the status comes from `-w`.
fn curl(cmd: &mut Command, body: Option<&Value>) -> (u16, Value) {
    cmd.args(["-w", "\n%{http_code}"]);
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("running curl: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(body) = body {
        use std::io::Write;
        stdin.write_all(body.to_string().as_bytes()).expect("writing the request body");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    // 000: no answer (refused, timed out).
    let status = status.trim().parse().unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn stop_child(child: &mut Child, name: &str) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    if wait_within(child, STOP_WITHIN).is_none() {
        eprintln!("{name} ignored SIGTERM for {STOP_WITHIN:?}: killed");
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A short stable name for a token's kubeconfig file.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
