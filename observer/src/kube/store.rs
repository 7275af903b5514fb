//! The pods this agent knows, keyed by pod uid and by container id: written
//! by the watcher, read by the attribution stage and `/pods`. Readers take a
//! snapshot (an `Arc`, swapped whole on each change: pods change seldom,
//! records are looked up all the time) and a generation number that says
//! when to take a new one.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use super::meta::PodMeta;
use crate::export::metrics::SourceMetric;

/// One consistent view of this node's pods.
#[derive(Debug, Default)]
pub struct PodIndex {
    pub by_uid: HashMap<String, Arc<PodMeta>>,
    /// Container id → its pod.
    pub by_container: HashMap<String, Arc<PodMeta>>,
}

impl PodIndex {
    fn of(pods: impl IntoIterator<Item = Arc<PodMeta>>) -> PodIndex {
        let mut index = PodIndex::default();
        for pod in pods {
            for id in pod.containers.keys() {
                index.by_container.insert(id.clone(), pod.clone());
            }
            index.by_uid.insert(pod.uid.clone(), pod);
        }
        index
    }

    /// A pod's metadata and, when known, the container's name: by container
    /// id first (it names the container), else by pod uid.
    pub fn lookup(&self, pod_uid: Option<&str>, container_id: Option<&str>) -> Option<(Arc<PodMeta>, Option<String>)> {
        if let Some(pod) = container_id.and_then(|id| self.by_container.get(id)) {
            let name = container_id.and_then(|id| pod.containers.get(id)).cloned();
            return Some((pod.clone(), name));
        }
        pod_uid.and_then(|uid| self.by_uid.get(uid)).map(|pod| (pod.clone(), None))
    }
}

/// The watcher's own numbers, for `/metrics`.
#[derive(Debug, Default)]
pub struct KubeStats {
    pub api_up: AtomicBool,
    pub watch_errors: AtomicU64,
    pub relists: AtomicU64,
}

#[derive(Debug, Default)]
pub struct PodStore {
    index: Mutex<Arc<PodIndex>>,
    generation: AtomicU64,
    pub stats: KubeStats,
}

impl PodStore {
    pub fn new() -> Arc<PodStore> {
        Arc::new(PodStore::default())
    }

    /// Changes whenever the pods do (0: none known yet).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Arc<PodIndex> {
        self.index.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// The whole list, as a (re-)list returned it: pods not in it are gone.
    pub fn replace(&self, pods: Vec<PodMeta>) {
        self.publish(PodIndex::of(pods.into_iter().map(Arc::new)));
    }

    /// A pod added or changed.
    pub fn apply(&self, pod: PodMeta) {
        let old = self.snapshot();
        if old.by_uid.get(&pod.uid).is_some_and(|known| **known == pod) {
            return;
        }
        let uid = pod.uid.clone();
        let others = old.by_uid.values().filter(|p| p.uid != uid).cloned();
        self.publish(PodIndex::of(others.chain([Arc::new(pod)])));
    }

    pub fn delete(&self, uid: &str) {
        let old = self.snapshot();
        if !old.by_uid.contains_key(uid) {
            return;
        }
        self.publish(PodIndex::of(old.by_uid.values().filter(|p| p.uid != uid).cloned()));
    }

    fn publish(&self, index: PodIndex) {
        if let Ok(mut i) = self.index.lock() {
            *i = Arc::new(index);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// `observer_kube_*` for `/metrics`.
    pub fn metrics(&self) -> Vec<SourceMetric> {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let metric = |name, help, counter, value| SourceMetric { name, help, counter, value };
        vec![
            metric("kube_pods", "pods of this node the agent knows", false, self.snapshot().by_uid.len() as u64),
            metric(
                "kube_api_up",
                "1 while the Kubernetes API answers the pod watch",
                false,
                self.stats.api_up.load(Ordering::Relaxed) as u64,
            ),
            metric(
                "kube_watch_errors",
                "errors of the pod watch (each retried with backoff)",
                true,
                load(&self.stats.watch_errors),
            ),
            metric(
                "kube_relists",
                "full lists of the pods after the first (a watch that expired or broke)",
                true,
                load(&self.stats.relists),
            ),
        ]
    }

    /// `/pods`: every pod known, with the `service.name` it resolves to.
    pub fn json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Pod<'a> {
            #[serde(flatten)]
            pod: &'a PodMeta,
            owner_kind: Option<&'a str>,
            owner_name: Option<&'a str>,
            service_name: Option<String>,
        }
        let index = self.snapshot();
        let mut pods: Vec<&Arc<PodMeta>> = index.by_uid.values().collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid)));
        let pods: Vec<Pod> = pods
            .into_iter()
            .map(|p| Pod {
                pod: p,
                owner_kind: p.owner().map(|o| o.kind.as_str()),
                owner_name: p.owner().map(|o| o.name.as_str()),
                service_name: p.service_name(None),
            })
            .collect();
        let api_up = self.stats.api_up.load(Ordering::Relaxed);
        serde_json::to_string_pretty(&serde_json::json!({"api_up": api_up, "pods": pods})).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, containers: &[(&str, &str)]) -> PodMeta {
        PodMeta {
            uid: uid.into(),
            name: format!("pod-{uid}"),
            containers: containers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..PodMeta::default()
        }
    }

    #[test]
    fn pods_are_found_by_container_then_uid_and_changes_bump_the_generation() {
        let store = PodStore::new();
        assert_eq!(store.generation(), 0);
        store.replace(vec![pod("u1", &[("c1", "server")]), pod("u2", &[])]);
        let g = store.generation();
        let index = store.snapshot();
        let (p, name) = index.lookup(Some("u2"), Some("c1")).unwrap();
        assert_eq!((p.uid.as_str(), name.as_deref()), ("u1", Some("server")), "the container id wins");
        let (p, name) = index.lookup(Some("u2"), Some("nope")).unwrap();
        assert_eq!((p.uid.as_str(), name), ("u2", None));
        assert!(index.lookup(None, None).is_none());
        store.apply(pod("u2", &[]));
        assert_eq!(store.generation(), g, "the same pod again changes nothing");
        store.apply(pod("u2", &[("c2", "db")]));
        assert!(store.generation() > g);
        assert_eq!(store.snapshot().lookup(None, Some("c2")).unwrap().1.as_deref(), Some("db"));
        store.delete("u1");
        assert!(store.snapshot().lookup(Some("u1"), Some("c1")).is_none());
        assert_eq!(store.snapshot().by_uid.len(), 1);
        store.replace(vec![pod("u3", &[])]);
        assert_eq!(store.snapshot().by_uid.keys().collect::<Vec<_>>(), ["u3"], "a re-list drops what it lacks");
    }
}
