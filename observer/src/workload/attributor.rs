//! The attribution stage: every record passes through [`Attributor::attribute`],
//! which keys it to a workload and resolves that workload's identity once.

use std::{
    collections::HashMap,
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{Attributed, Identity, K8sMetadata, WorkloadKey};
use crate::{
    event::{Attribution, Event, Record, Workload},
    kube::{PodStore, store::PodIndex},
    netns::NetnsOwners,
};

/// Identities kept at most; past it the cache starts over (each is cheap to resolve again).
const MAX_IDENTITIES: usize = 8192;
/// Bytes of `/proc/PID/environ` read at most (a container sets it).
const MAX_ENVIRON: u64 = 64 * 1024;
/// Bytes of `cgroup.procs` read to find a cgroup's processes.
const MAX_PROCS: u64 = 4096;

pub struct Attributor {
    identities: HashMap<WorkloadKey, Arc<Identity>>,
    /// Whether a cgroup is shared (its path parsed once, not per record).
    shared_by_id: HashMap<u64, bool>,
    /// What a network namespace's records are keyed to, decided once per namespace.
    by_netns: HashMap<u32, WorkloadKey>,
    host_netns: Option<u32>,
    cgroup_root: Option<PathBuf>,
    /// This node's pods, when Kubernetes metadata is on.
    pods: Option<Arc<PodStore>>,
    /// The store's generation the identities were last matched against.
    pods_generation: u64,
    /// How each pod workload's `service.name` falls back (to match it
    /// again when its pod arrives, changes or goes).
    naming: HashMap<WorkloadKey, Naming>,
}

/// A pod workload's names apart from Kubernetes.
struct Naming {
    /// Its process's own `OTEL_SERVICE_NAME` (or `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`): wins over the pod's.
    own: Option<String>,
    /// When no pod is known: the container's, executable's or cgroup's name.
    fallback: String,
}

impl Attributor {
    pub fn new() -> Self {
        let cgroup_root =
            std::fs::read_to_string("/proc/self/mountinfo").ok().and_then(|m| crate::cgroup::cgroup2_mount(&m));
        let host_netns = std::fs::metadata("/proc/self/ns/net").ok().and_then(|m| u32::try_from(m.ino()).ok());
        Self {
            identities: HashMap::new(),
            shared_by_id: HashMap::new(),
            by_netns: HashMap::new(),
            host_netns,
            cgroup_root,
            pods: None,
            pods_generation: 0,
            naming: HashMap::new(),
        }
    }

    /// Matches pod workloads to this node's pods as they are known.
    pub fn with_pods(mut self, pods: Option<Arc<PodStore>>) -> Self {
        self.pods = pods;
        self
    }

    /// `netns`: who uses each network namespace (the sources' own table).
    /// `None`: the record belongs to no workload (a shared cgroup's own
    /// counters, such as a `.slice`'s `memory.events`, which sum those of
    /// its children; a record with no cgroup, process or namespace).
    pub fn attribute(&mut self, record: Record, netns: &mut NetnsOwners) -> Option<Attributed> {
        self.follow_pods();
        let key = self.key(&record.event, netns)?;
        let identity = self.identity(key, &record.event, netns);
        Some(Attributed { key, identity, record })
    }

    fn key(&mut self, event: &Event, netns_owners: &mut NetnsOwners) -> Option<WorkloadKey> {
        let who = who(event);
        let cgroup = who.and_then(|w| Some((w.cgroup_id?, w.cgroup_path.as_deref())));
        if let Some((cgroup_id, path)) = cgroup
            && !self.is_shared(cgroup_id, path)
        {
            return Some(WorkloadKey::Cgroup { cgroup_id });
        }
        if let Some(netns) = network_namespace(event)
            && (cgroup.is_none() || Some(netns) != self.host_netns)
        {
            return Some(self.netns_key(netns, netns_owners));
        }
        match (cgroup, who.and_then(|w| w.pid)) {
            (Some((cgroup_id, _)), Some(pid)) => Some(WorkloadKey::Process { cgroup_id, pid }),
            (None, Some(pid)) => Some(WorkloadKey::Process { cgroup_id: 0, pid }),
            (_, None) => None,
        }
    }

    /// [`shared`], remembered per cgroup id (a record without a path is not).
    fn is_shared(&mut self, cgroup_id: u64, path: Option<&str>) -> bool {
        let Some(path) = path else { return false };
        if let Some(&known) = self.shared_by_id.get(&cgroup_id) {
            return known;
        }
        if self.shared_by_id.len() >= MAX_IDENTITIES {
            self.shared_by_id.clear();
        }
        let is = shared(path);
        self.shared_by_id.insert(cgroup_id, is);
        is
    }

    /// A network namespace's records go to the cgroup of a process in it
    /// when that cgroup is a workload of its own (a pod's container), else
    /// to the namespace itself (on a host whose processes share `/`). A
    /// namespace's own cgroup, once found, is kept; until then it is asked
    /// again (the namespace may be entered later).
    fn netns_key(&mut self, netns: u32, owners: &mut NetnsOwners) -> WorkloadKey {
        if let Some(&key) = self.by_netns.get(&netns) {
            return key;
        }
        let owner = owners.owner(netns);
        let own_cgroup = owner
            .as_ref()
            .and_then(|o| o.cgroup_paths.iter().find(|p| !shared(p)).cloned())
            .and_then(|path| self.cgroup_id(&path));
        let Some(cgroup_id) = own_cgroup else { return WorkloadKey::Netns { netns } };
        let key = WorkloadKey::Cgroup { cgroup_id };
        if self.by_netns.len() >= MAX_IDENTITIES {
            self.by_netns.clear();
        }
        self.by_netns.insert(netns, key);
        key
    }

    fn identity(&mut self, key: WorkloadKey, event: &Event, owners: &mut NetnsOwners) -> Arc<Identity> {
        let go_version = go_version(event);
        // A Go process attached: its settings are the workload's from now on.
        let go_env = match event {
            Event::GoAttach(a) => Some(&a.env),
            _ => None,
        };
        if let Some(known) = self.identities.get(&key)
            && (go_version.is_none() || known.go_version.is_some())
            && go_env.is_none_or(|env| known.go_env.as_ref() == Some(env))
        {
            return known.clone();
        }
        let mut identity = match self.identities.get(&key) {
            Some(known) => Identity::clone(known),
            None => self.resolve(key, who(event), owners),
        };
        if identity.go_version.is_none() {
            identity.go_version = go_version.map(str::to_string);
        }
        if let Some(env) = go_env {
            identity.go_env = Some(env.clone());
        }
        let identity = Arc::new(identity);
        if self.identities.len() >= MAX_IDENTITIES {
            self.identities.clear();
            self.naming.retain(|k, _| *k == key);
        }
        self.identities.insert(key, identity.clone());
        identity
    }

    /// When the pods changed (rarely: one atomic load per record
    /// otherwise), every pod workload's identity is matched again: a
    /// workload seen before its pod was listed gets its metadata, a changed
    /// pod its new `service.name`, a deleted one loses them.
    fn follow_pods(&mut self) {
        let Some(store) = &self.pods else { return };
        let generation = store.generation();
        if generation == self.pods_generation {
            return;
        }
        self.pods_generation = generation;
        let index = store.snapshot();
        for (key, naming) in &self.naming {
            let Some(known) = self.identities.get(key) else { continue };
            let matched = with_pod(&index, Identity::clone(known), naming);
            if matched != **known {
                self.identities.insert(*key, Arc::new(matched));
            }
        }
    }

    /// A pod workload's identity with its pod's metadata, when it is known.
    fn pod_identity(&mut self, key: WorkloadKey, identity: Identity, naming: Naming) -> Identity {
        if identity.k8s_pod_uid.is_none() && identity.container_id.is_none() {
            return identity;
        }
        let identity = match &self.pods {
            Some(store) => with_pod(&store.snapshot(), identity, &naming),
            None => identity,
        };
        self.naming.insert(key, naming);
        identity
    }

    fn resolve(&mut self, key: WorkloadKey, who: Option<&Attribution>, owners: &mut NetnsOwners) -> Identity {
        match key {
            WorkloadKey::Cgroup { cgroup_id } => {
                let path = who.and_then(|w| w.cgroup_path.clone()).or_else(|| self.cgroup_path(cgroup_id));
                let procs = path.as_deref().map(|p| self.procs(p)).unwrap_or_default();
                let process = procs.first().map(|&pid| ProcessFacts::read(pid));
                let workload = Workload::from_cgroup_path(path.as_deref());
                // A container's name does not depend on which of its
                // processes was read first; its own OTEL_SERVICE_NAME wins,
                // then its pod's (`with_pod`).
                let own = process.as_ref().and_then(|p| p.service_name.clone());
                let fallback = workload
                    .container_id
                    .as_ref()
                    .map(|id| format!("container-{}", &id[..id.len().min(12)]))
                    .or_else(|| process.as_ref().and_then(|p| p.executable.clone()))
                    .unwrap_or_else(|| cgroup_name(path.as_deref()));
                // Processes come and go in a cgroup: its identity names none.
                let identity = Identity {
                    service_name: own.clone().unwrap_or_else(|| fallback.clone()),
                    cgroup_id: Some(cgroup_id),
                    cgroup_path: path,
                    container_id: workload.container_id,
                    container_runtime: workload.container_runtime,
                    k8s_pod_uid: workload.k8s_pod_uid,
                    k8s_pod_qos: workload.k8s_pod_qos,
                    ..Identity::default()
                };
                self.pod_identity(key, identity, Naming { own, fallback })
            }
            WorkloadKey::Process { cgroup_id, pid } => {
                let process = ProcessFacts::read(pid);
                let comm = who.and_then(|w| w.comm.clone());
                let executable = process.executable.clone().or(comm);
                Identity {
                    service_name: process
                        .service_name
                        .or_else(|| executable.clone())
                        .unwrap_or_else(|| format!("pid-{pid}")),
                    cgroup_id: (cgroup_id != 0).then_some(cgroup_id),
                    cgroup_path: who.and_then(|w| w.cgroup_path.clone()),
                    pid: Some(pid),
                    executable_name: executable,
                    ..Identity::default()
                }
            }
            WorkloadKey::Netns { netns } => {
                let owner = owners.owner(netns);
                let process = owner.as_ref().and_then(|o| o.pids.first()).map(|&pid| ProcessFacts::read(pid));
                let name = owner.as_ref().and_then(|o| o.name.clone());
                let service_name = process
                    .as_ref()
                    .and_then(|p| p.service_name.clone())
                    .or_else(|| name.as_ref().map(|n| format!("netns-{n}")))
                    .or_else(|| process.as_ref().and_then(|p| p.executable.clone()))
                    .unwrap_or_else(|| format!("netns-{netns}"));
                Identity {
                    service_name,
                    netns: Some(netns),
                    executable_name: process.and_then(|p| p.executable),
                    ..Identity::default()
                }
            }
        }
    }

    fn cgroup_id(&self, path: &str) -> Option<u64> {
        let root = self.cgroup_root.as_ref()?;
        std::fs::metadata(root.join(path.trim_start_matches('/'))).ok().map(|m| m.ino())
    }

    fn cgroup_path(&self, cgroup_id: u64) -> Option<String> {
        let root = self.cgroup_root.as_ref()?;
        crate::cgroup::directories(root).into_iter().find_map(|dir| {
            if std::fs::metadata(&dir).ok()?.ino() != cgroup_id {
                return None;
            }
            Some(format!("/{}", dir.strip_prefix(root).ok()?.display()))
        })
    }

    /// The first pids of a cgroup (`cgroup.procs`, bounded).
    fn procs(&self, path: &str) -> Vec<u32> {
        let Some(root) = self.cgroup_root.as_ref() else { return Vec::new() };
        let text = read_bounded(&root.join(path.trim_start_matches('/')).join("cgroup.procs"), MAX_PROCS);
        let mut lines: Vec<&str> = text.lines().collect();
        // A cut-off last line is not a pid.
        if text.len() as u64 >= MAX_PROCS {
            lines.pop();
        }
        lines.iter().filter_map(|l| l.trim().parse().ok()).collect()
    }
}

/// `identity` with the metadata of its pod in `index` (matched by container
/// id, else pod uid) and the `service.name` that follows: its process's
/// own, else the pod's (OpenTelemetry's order, `PodMeta::service_name`),
/// else the fallback. Without a pod: no metadata, the fallback.
fn with_pod(index: &PodIndex, mut identity: Identity, naming: &Naming) -> Identity {
    let found = index.lookup(identity.k8s_pod_uid.as_deref(), identity.container_id.as_deref());
    identity.service_name = naming
        .own
        .clone()
        .or_else(|| found.as_ref().and_then(|(pod, container)| pod.service_name(container.as_deref())))
        .unwrap_or_else(|| naming.fallback.clone());
    identity.k8s = found.map(|(pod, container_name)| K8sMetadata {
        pod_name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        node_name: pod.node.clone(),
        container_name,
        owners: pod.owners.clone(),
    });
    identity
}

/// A cgroup that holds unrelated processes: each process is its own workload.
pub fn shared(path: &str) -> bool {
    if crate::cgroup::container::parse(path).is_some_and(|c| c.container_id.is_some() || c.pod_uid.is_some()) {
        return false;
    }
    let last = path.rsplit('/').next().unwrap_or("");
    path.is_empty()
        || path == "/"
        || last == "init.scope"
        || (last.starts_with("session-") && last.ends_with(".scope"))
        || path.contains("/user@")
        || last.ends_with(".slice")
}

/// The last part of a cgroup path, as a name of last resort.
fn cgroup_name(path: Option<&str>) -> String {
    path.and_then(|p| p.rsplit('/').find(|s| !s.is_empty())).unwrap_or("cgroup").to_string()
}

/// What a process says about itself.
#[derive(Default)]
struct ProcessFacts {
    executable: Option<String>,
    service_name: Option<String>,
}

impl ProcessFacts {
    fn read(pid: u32) -> Self {
        let executable = std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().trim_end_matches(" (deleted)").to_string()))
            .or_else(|| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim_end().to_string()));
        let environ = read_bounded(Path::new(&format!("/proc/{pid}/environ")), MAX_ENVIRON);
        Self { executable, service_name: service_name(&environ) }
    }
}

/// `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`,
/// from a NUL-separated environment.
pub fn service_name(environ: &str) -> Option<String> {
    let var = |name: &str| {
        environ.split('\0').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')).filter(|v| !v.is_empty())
    };
    var("OTEL_SERVICE_NAME").map(str::to_string).or_else(|| {
        var("OTEL_RESOURCE_ATTRIBUTES")?.split(',').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == "service.name" && !v.trim().is_empty()).then(|| v.trim().to_string())
        })
    })
}

fn read_bounded(path: &Path, max: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(max).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Who a record belongs to, as its source said.
pub fn who(event: &Event) -> Option<&Attribution> {
    Some(match event {
        Event::TcpReset(e) => &e.who,
        Event::GoGc(e) => &e.owner.who,
        Event::GoAssist(e) => &e.owner.who,
        Event::GoHeapGrow(e) | Event::GoScavenge(e) => &e.owner.who,
        Event::GoScavengeSummary(e) => &e.owner.who,
        Event::GoAttach(e) => &e.owner.who,
        Event::NetDrop(e) => &e.who,
        Event::NetDropSummary(_) => return None,
        Event::TcpRetransmit(e) => &e.who,
        Event::MemcgEvents(e) => &e.who,
        Event::MemcgOomKill(e) => &e.who,
        Event::MemcgThrottle(e) => &e.who,
        Event::MemcgThrottleIdle(e) => &e.who,
        Event::MemcgReclaim(e) => &e.who,
        Event::MemcgReclaimStat(e) => &e.who,
        Event::MemcgPressure(e) => &e.who,
    })
}

/// The network namespace of a network record.
fn network_namespace(event: &Event) -> Option<u32> {
    match event {
        Event::TcpReset(e) => Some(e.netns),
        Event::NetDrop(e) => Some(e.netns),
        Event::NetDropSummary(e) => Some(e.netns),
        Event::TcpRetransmit(e) => Some(e.netns),
        _ => None,
    }
    .filter(|&n| n != 0)
}

fn go_version(event: &Event) -> Option<&str> {
    match event {
        Event::GoGc(e) => e.owner.go_version.as_deref(),
        Event::GoAssist(e) => e.owner.go_version.as_deref(),
        Event::GoHeapGrow(e) | Event::GoScavenge(e) => e.owner.go_version.as_deref(),
        Event::GoScavengeSummary(e) => e.owner.go_version.as_deref(),
        Event::GoAttach(e) => e.owner.go_version.as_deref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_name_prefers_the_variable_then_the_resource_attribute() {
        let env = "PATH=/bin\0OTEL_RESOURCE_ATTRIBUTES=a=b,service.name=from-attrs\0OTEL_SERVICE_NAME=checkout\0";
        assert_eq!(service_name(env).as_deref(), Some("checkout"));
        assert_eq!(service_name("OTEL_RESOURCE_ATTRIBUTES=a=b, service.name = cart\0").as_deref(), Some("cart"));
        assert_eq!(service_name("OTEL_SERVICE_NAME=\0X=1").as_deref(), None);
        assert_eq!(service_name("MY_OTEL_SERVICE_NAME=x\0"), None);
    }

    /// A process's `go.attach` gives its workload the settings it read; the
    /// records after it keep them.
    #[test]
    fn go_attach_sets_the_workloads_go_settings() {
        use crate::event::{GoAttach, GoOwner, GoScavengeSummary};
        use crate::process::environ::GoEnv;
        let owner = GoOwner {
            go_version: Some("go1.27.4".into()),
            go_module: None,
            who: Attribution { cgroup_id: Some(1), cgroup_path: Some("/".into()), pid: Some(42), ..Default::default() },
        };
        let env = GoEnv::parse(b"GOGC=50\0");
        let attach = Event::GoAttach(GoAttach {
            executable: None,
            layout: "dwarf",
            probes: 6,
            alloc_sampling: "memprofile",
            mappings: None,
            watched_from: "attach",
            cycles_at_attach: Some(0),
            env: env.clone(),
            owner: owner.clone(),
        });
        let summary =
            Event::GoScavengeSummary(GoScavengeSummary { calls: 1, bytes: 1, total_calls: 1, total_bytes: 1, owner });
        let record = |event| Record { time: String::new(), time_unix_nano: 1, event };
        let mut attributor = Attributor::new();
        let mut netns = NetnsOwners::new();
        let before = attributor.attribute(record(summary.clone()), &mut netns).expect("a process workload");
        assert_eq!(before.identity.go_env, None);
        let attached = attributor.attribute(record(attach), &mut netns).expect("a process workload");
        assert_eq!(attached.key, before.key);
        assert_eq!(attached.identity.go_env.as_ref(), Some(&env));
        let after = attributor.attribute(record(summary), &mut netns).expect("a process workload");
        assert_eq!(after.identity.go_env.as_ref().and_then(|e| e.env_gogc.as_deref()), Some("50"));
    }

    /// A container's records attributed before its pod is listed get the
    /// pod's metadata once it is; a change of the pod renames it; its
    /// deletion takes the metadata away again.
    #[test]
    fn a_pod_workload_follows_its_pod() {
        use crate::event::{GoOwner, GoScavengeSummary};
        use crate::kube::meta::{PodMeta, owners};
        let id = "8b3f".repeat(16);
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f5e6a4c_1b2d_4c3e_9f80_a1b2c3d4e5f6.slice/cri-containerd-{id}.scope"
        );
        let owner = GoOwner {
            go_version: None,
            go_module: None,
            who: Attribution { cgroup_id: Some(77), cgroup_path: Some(path), ..Default::default() },
        };
        let event =
            Event::GoScavengeSummary(GoScavengeSummary { calls: 1, bytes: 1, total_calls: 1, total_bytes: 1, owner });
        let record = || Record { time: String::new(), time_unix_nano: 1, event: event.clone() };
        let store = crate::kube::PodStore::new();
        let mut attributor = Attributor::new().with_pods(Some(store.clone()));
        let mut netns = NetnsOwners::new();
        let mut identity = || attributor.attribute(record(), &mut netns).expect("a cgroup workload").identity;
        let before = identity();
        assert_eq!((before.k8s.as_ref(), before.service_name.as_str()), (None, "container-8b3f8b3f8b3f"));
        let hash = [("pod-template-hash".to_string(), "7d4b9c8f6".to_string())].into();
        let mut pod = PodMeta {
            uid: "0f5e6a4c-1b2d-4c3e-9f80-a1b2c3d4e5f6".into(),
            namespace: "shop".into(),
            name: "web-7d4b9c8f6-x2x4z".into(),
            node: Some("node-a".into()),
            owners: owners("ReplicaSet", "web-7d4b9c8f6", &hash),
            labels: hash,
            ..PodMeta::default()
        };
        store.apply(pod.clone());
        let listed = identity();
        let k8s = listed.k8s.clone().expect("the pod's metadata");
        assert_eq!((k8s.pod_name.as_deref(), k8s.namespace.as_deref()), (Some("web-7d4b9c8f6-x2x4z"), Some("shop")));
        assert_eq!(k8s.container_name, None, "matched by the pod uid: the container id is not in the status yet");
        assert_eq!(listed.service_name, "web", "the deployment");
        pod.containers.insert(id.clone(), "server".into());
        pod.labels.insert("app.kubernetes.io/instance".into(), "web-prod".into());
        store.apply(pod);
        let changed = identity();
        assert_eq!(changed.k8s.as_ref().and_then(|k| k.container_name.as_deref()), Some("server"));
        assert_eq!(changed.service_name, "web-prod");
        store.delete("0f5e6a4c-1b2d-4c3e-9f80-a1b2c3d4e5f6");
        let gone = identity();
        assert_eq!((gone.k8s.as_ref(), gone.service_name.as_str()), (None, "container-8b3f8b3f8b3f"));
    }

    #[test]
    fn shared_cgroups_are_split_by_process() {
        for path in [
            "/",
            "/init.scope",
            "/user.slice/user-0.slice/session-3.scope",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/x.service",
            "/system.slice",
        ] {
            assert!(shared(path), "{path}");
        }
        for path in [
            "/system.slice/nginx.service",
            "/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope",
            "/observer-test-1",
        ] {
            assert!(!shared(path), "{path}");
        }
    }
}
