//! Workloads: who a record belongs to. Every record passes through one
//! attribution stage (`Attributor`) that keys it to a workload and resolves
//! that workload's identity once (container, pod, executable, Go version,
//! `service.name`), so sources never look up cgroups or namespaces for the
//! episode engine themselves.
//!
//! How workloads are formed (README "Workloads"):
//! - a cgroup is one workload when it is not shared by unrelated processes:
//!   a container's cgroup, a service's own cgroup, a cgroup a test made;
//! - in a shared cgroup (the root `/`, `init.scope`, a login session's
//!   `session-N.scope`, `user@UID.service` and its children) each process
//!   is its own workload;
//! - a record known only by its network namespace (a reset for a closed
//!   port) belongs to the workload of a process in that namespace; when no
//!   process is in it, the namespace itself is the workload.

pub mod attributor;

use std::sync::Arc;

use serde::Serialize;

use crate::cgroup::container::{Qos, Runtime};

/// What a record is keyed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum WorkloadKey {
    /// A cgroup that is one workload (a container, a service's own cgroup).
    Cgroup { cgroup_id: u64 },
    /// One process of a cgroup shared by unrelated processes.
    Process { cgroup_id: u64, pid: u32 },
    /// A network namespace no known process is in.
    Netns { netns: u32 },
}

/// A workload's identity, resolved once and shared by every record of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Identity {
    /// The process's own `OTEL_SERVICE_NAME`, else `service.name` in its
    /// `OTEL_RESOURCE_ATTRIBUTES`, else the container's, executable's or
    /// cgroup's name.
    pub service_name: String,
    pub cgroup_id: Option<u64>,
    pub cgroup_path: Option<String>,
    pub container_id: Option<String>,
    pub container_runtime: Option<Runtime>,
    pub k8s_pod_uid: Option<String>,
    pub k8s_pod_qos: Option<Qos>,
    /// The pod's metadata from the Kubernetes API (`crate::kube`), matched
    /// by the pod uid or container id; `None` until the pod is known.
    pub k8s: Option<K8sMetadata>,
    /// Set for a single-process workload only.
    pub pid: Option<u32>,
    /// The executable's file name (a single-process workload, or the
    /// process the `service.name` was read from).
    pub executable_name: Option<String>,
    /// `go1.26.8`, for a Go process.
    pub go_version: Option<String>,
    /// What the Go process was started with (`GOGC`, `GOMEMLIMIT`,
    /// `GODEBUG`), from its `go.attach`; a cgroup's: its Go process attached last.
    pub go_env: Option<crate::process::environ::GoEnv>,
    /// The network namespace, for a namespace workload.
    pub netns: Option<u32>,
}

/// What the Kubernetes API says of a workload's pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct K8sMetadata {
    pub pod_name: Option<String>,
    pub namespace: Option<String>,
    pub node_name: Option<String>,
    /// By the container id (a pod's own cgroup has none).
    pub container_name: Option<String>,
    /// As `k8s.<kind>.name`, the reported owner first (a Deployment, then its ReplicaSet).
    pub owners: Vec<crate::kube::meta::Owner>,
}

/// A record keyed to its workload: what the episode engine is fed.
#[derive(Clone, Debug)]
pub struct Attributed {
    pub key: WorkloadKey,
    pub identity: Arc<Identity>,
    pub record: crate::event::Record,
}
