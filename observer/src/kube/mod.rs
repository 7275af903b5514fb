//! Kubernetes pod metadata: the pods of this node from the API server (a
//! watch with the field selector `spec.nodeName=<node>`), kept by pod uid
//! and container id for the attribution stage, which matches them to the
//! uid and container id in a workload's cgroup path.
//!
//! - `meta`: what is kept of a pod, its owner and `service.name` (pure);
//! - `store`: the pods known, as cheap snapshots, and the watch's numbers;
//! - `watch`: the watcher task (the `kubernetes` cargo feature).

// Without the `kubernetes` feature no watcher writes pods; the rules and the
// store still build (and are tested), so the rest of the agent is the same.
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
pub mod meta;
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
pub mod store;
#[cfg(feature = "kubernetes")]
mod watch;

use std::{path::PathBuf, sync::Arc};

use anyhow::Result;

pub use store::PodStore;

/// Whether this build can talk to an API server (the `kubernetes` feature).
pub const BUILT_IN: bool = cfg!(feature = "kubernetes");

/// How the API server is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiSource {
    /// `--kubeconfig`, else `KUBECONFIG`.
    Kubeconfig(PathBuf),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST` and its token).
    InCluster,
}

/// The resolved `--kubernetes` settings: metadata is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeSettings {
    pub source: ApiSource,
    /// Whose pods are watched (`--node-name`, else this machine's host name).
    pub node_name: String,
}

/// Reads the client configuration (a bad kubeconfig is a start-up error)
/// and starts watching; the pods arrive in the store as they are listed.
/// Returns the store and where the API server is.
#[cfg(feature = "kubernetes")]
pub async fn start(settings: &KubeSettings) -> Result<(Arc<PodStore>, String)> {
    let (client, url) = watch::client(settings).await?;
    let store = PodStore::new();
    watch::spawn(client, url.clone(), settings, store.clone());
    Ok((store, url))
}

#[cfg(not(feature = "kubernetes"))]
pub async fn start(_settings: &KubeSettings) -> Result<(Arc<PodStore>, String)> {
    anyhow::bail!("this observer was built without the `kubernetes` feature")
}
