//! What the agent keeps of a pod, and the pure rules on it: the owner it
//! reports (a ReplicaSet's Deployment), the `service.name` the OpenTelemetry
//! Kubernetes guidance gives it, and the container ids a kubelet wrote.

use std::collections::BTreeMap;

use serde::Serialize;

/// The pod annotation that names its service (OpenTelemetry's guidance).
pub const SERVICE_NAME_ANNOTATION: &str = "resource.opentelemetry.io/service.name";
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label a Deployment's ReplicaSet puts on its pods, and on its own name's end.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// One pod as the API server described it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `resource.opentelemetry.io/service.name` (the only annotation kept).
    pub service_annotation: Option<String>,
    /// The owners as resource attributes name them, the one reported
    /// first: `[("deployment", "web"), ("replicaset", "web-7d4b9c8f6")]`.
    pub owners: Vec<Owner>,
    /// Container id (without the `containerd://` scheme) → container name.
    pub containers: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    /// Lower case, as in `k8s.<kind>.name`: `deployment`, `statefulset`, …
    pub kind: String,
    pub name: String,
}

impl PodMeta {
    /// The owner reported for the pod (a ReplicaSet's Deployment).
    pub fn owner(&self) -> Option<&Owner> {
        self.owners.first()
    }

    /// `service.name` by the OpenTelemetry Kubernetes guidance: the
    /// annotation, `app.kubernetes.io/instance`, `app.kubernetes.io/name`,
    /// the owner's name, the pod's name, the container's name. (A process's
    /// own `OTEL_SERVICE_NAME` comes before all of these; the attributor
    /// applies it.)
    pub fn service_name(&self, container: Option<&str>) -> Option<String> {
        let non_empty = |v: Option<&String>| v.filter(|v| !v.is_empty()).cloned();
        non_empty(self.service_annotation.as_ref())
            .or_else(|| non_empty(self.labels.get(INSTANCE_LABEL)))
            .or_else(|| non_empty(self.labels.get(NAME_LABEL)))
            .or_else(|| non_empty(self.owner().map(|o| &o.name)))
            .or_else(|| (!self.name.is_empty()).then(|| self.name.clone()))
            .or_else(|| container.filter(|c| !c.is_empty()).map(str::to_string))
    }
}

/// The owners of a pod whose controller is `kind`/`name`, the reported one
/// first. A ReplicaSet named `<deployment>-<pod-template-hash>` is a
/// Deployment's: its name is derived by stripping the hash, as the
/// OpenTelemetry k8sattributes processor does, instead of watching
/// ReplicaSets.
pub fn owners(kind: &str, name: &str, labels: &BTreeMap<String, String>) -> Vec<Owner> {
    let owner = |kind: &str, name: &str| Owner { kind: kind.to_ascii_lowercase(), name: name.to_string() };
    let this = owner(kind, name);
    if kind != "ReplicaSet" {
        return vec![this];
    }
    let deployment = match labels.get(POD_TEMPLATE_HASH).filter(|h| !h.is_empty()) {
        Some(hash) => name.strip_suffix(hash.as_str()).and_then(|n| n.strip_suffix('-')),
        // No label: the last `-` part, when it looks like a hash.
        None => name.rsplit_once('-').filter(|(_, h)| is_hash(h)).map(|(n, _)| n),
    };
    match deployment.filter(|d| !d.is_empty()) {
        Some(d) => vec![owner("deployment", d), this],
        None => vec![this],
    }
}

/// A pod-template-hash: up to 10 characters of Kubernetes' safe alphabet.
fn is_hash(s: &str) -> bool {
    (1..=10).contains(&s.len()) && s.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

/// `containerd://8b3f…` → `8b3f…` (any runtime's scheme).
pub fn container_id(status_id: &str) -> Option<&str> {
    let id = status_id.split_once("://").map_or(status_id, |(_, id)| id);
    (!id.is_empty()).then_some(id)
}

#[cfg(feature = "kubernetes")]
impl PodMeta {
    /// What the agent keeps of an API object; `None` without a uid.
    pub fn from_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Option<PodMeta> {
        let m = &pod.metadata;
        let uid = m.uid.clone().filter(|u| !u.is_empty())?;
        let labels: BTreeMap<String, String> = m.labels.clone().unwrap_or_default();
        let service_annotation = m.annotations.as_ref().and_then(|a| a.get(SERVICE_NAME_ANNOTATION)).cloned();
        let refs = m.owner_references.as_deref().unwrap_or_default();
        let controller = refs.iter().find(|r| r.controller == Some(true)).or(refs.first());
        let owners = controller.map(|r| owners(&r.kind, &r.name, &labels)).unwrap_or_default();
        let mut containers = BTreeMap::new();
        if let Some(status) = &pod.status {
            let all =
                [&status.container_statuses, &status.init_container_statuses, &status.ephemeral_container_statuses];
            for s in all.into_iter().flatten().flatten() {
                if let Some(id) = s.container_id.as_deref().and_then(container_id) {
                    containers.insert(id.to_string(), s.name.clone());
                }
            }
        }
        Some(PodMeta {
            uid,
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            labels,
            service_annotation,
            owners,
            containers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn names(owners: &[Owner]) -> Vec<(&str, &str)> {
        owners.iter().map(|o| (o.kind.as_str(), o.name.as_str())).collect()
    }

    #[test]
    fn a_replicasets_pods_belong_to_its_deployment() {
        let hash = labels(&[("pod-template-hash", "7d4b9c8f6")]);
        assert_eq!(
            names(&owners("ReplicaSet", "web-api-7d4b9c8f6", &hash)),
            [("deployment", "web-api"), ("replicaset", "web-api-7d4b9c8f6")]
        );
        // Without the label, a hash-like last part.
        assert_eq!(
            names(&owners("ReplicaSet", "web-5d8b6f7c9x", &labels(&[]))),
            [("deployment", "web"), ("replicaset", "web-5d8b6f7c9x")]
        );
        // A ReplicaSet of its own (no hash): no deployment.
        assert_eq!(names(&owners("ReplicaSet", "cache", &hash)), [("replicaset", "cache")]);
        assert_eq!(names(&owners("ReplicaSet", "my-cache", &labels(&[]))), [("replicaset", "my-cache")]);
        assert_eq!(names(&owners("ReplicaSet", "-7d4b9c8f6", &hash)), [("replicaset", "-7d4b9c8f6")]);
    }

    #[test]
    fn other_owners_are_reported_as_they_are() {
        for (kind, want) in [("StatefulSet", "statefulset"), ("DaemonSet", "daemonset"), ("Job", "job")] {
            assert_eq!(names(&owners(kind, "db", &labels(&[]))), [(want, "db")]);
        }
        assert_eq!(names(&owners("Rollout", "x", &labels(&[]))), [("rollout", "x")]);
    }

    #[test]
    fn service_name_follows_the_opentelemetry_order() {
        let mut pod = PodMeta {
            name: "web-7d4b9c8f6-abcde".into(),
            labels: labels(&[("app.kubernetes.io/name", "web"), ("app.kubernetes.io/instance", "web-prod")]),
            service_annotation: Some("checkout".into()),
            owners: owners("ReplicaSet", "web-7d4b9c8f6", &labels(&[("pod-template-hash", "7d4b9c8f6")])),
            ..PodMeta::default()
        };
        let name = |pod: &PodMeta| pod.service_name(Some("server"));
        assert_eq!(name(&pod).as_deref(), Some("checkout"));
        pod.service_annotation = Some(String::new());
        assert_eq!(name(&pod).as_deref(), Some("web-prod"), "an empty annotation is not a name");
        pod.labels.remove(INSTANCE_LABEL);
        assert_eq!(name(&pod).as_deref(), Some("web"));
        pod.labels.clear();
        assert_eq!(name(&pod).as_deref(), Some("web"), "the deployment");
        pod.owners.clear();
        assert_eq!(name(&pod).as_deref(), Some("web-7d4b9c8f6-abcde"), "the pod");
        pod.name.clear();
        assert_eq!(name(&pod).as_deref(), Some("server"), "the container");
        assert_eq!(pod.service_name(None), None);
    }

    #[test]
    fn container_ids_lose_their_scheme() {
        assert_eq!(container_id("containerd://8b3f"), Some("8b3f"));
        assert_eq!(container_id("cri-o://ab"), Some("ab"));
        assert_eq!(container_id("ab"), Some("ab"));
        assert_eq!(container_id("containerd://"), None);
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn a_pod_object_becomes_its_metadata() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "uid": "0f5e6a4c-1b2d-4c3e-9f80-a1b2c3d4e5f6", "name": "web-7d4b9c8f6-x2x4z", "namespace": "shop",
                "labels": {"pod-template-hash": "7d4b9c8f6", "app.kubernetes.io/name": "web"},
                "annotations": {"resource.opentelemetry.io/service.name": "checkout", "other": "x"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "1"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6", "uid": "2", "controller": true}
                ]
            },
            "spec": {"nodeName": "node-a", "containers": [{"name": "server"}, {"name": "sidecar"}]},
            "status": {"containerStatuses": [
                {"name": "server", "containerID": "containerd://8b3f", "image": "", "imageID": "", "ready": true, "restartCount": 0},
                {"name": "sidecar", "image": "", "imageID": "", "ready": false, "restartCount": 0}
            ]}
        }))
        .unwrap();
        let meta = PodMeta::from_pod(&pod).unwrap();
        assert_eq!(meta.uid, "0f5e6a4c-1b2d-4c3e-9f80-a1b2c3d4e5f6");
        assert_eq!((meta.namespace.as_str(), meta.name.as_str()), ("shop", "web-7d4b9c8f6-x2x4z"));
        assert_eq!(meta.node.as_deref(), Some("node-a"));
        assert_eq!(names(&meta.owners), [("deployment", "web"), ("replicaset", "web-7d4b9c8f6")]);
        assert_eq!(meta.containers, labels(&[("8b3f", "server")]), "a container not started yet has no id");
        assert_eq!(meta.service_annotation.as_deref(), Some("checkout"));
    }
}
