//! The watch of this node's pods (`spec.nodeName=<node>`), a task on the
//! agent's runtime: kube's `runtime::watcher` lists, then watches, re-lists
//! when the watch expires or breaks, and backs off on errors (its default:
//! exponential, 0.8 s to 30 s). A list replaces the store whole once it is
//! complete, so a re-list after an outage ends exactly right. An API server
//! that is unreachable or forbids the list costs the metadata only: one
//! warning per outage, `observer_kube_api_up 0`, and the records keep their
//! cgroup data.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use ::kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;

use super::{ApiSource, KubeSettings, meta::PodMeta, store::PodStore};
use crate::view::console;

/// A client for the API server the settings name: read now, so that a bad
/// kubeconfig stops the start with one error naming it.
pub async fn client(settings: &KubeSettings) -> Result<(Client, String)> {
    let config = match &settings.source {
        ApiSource::Kubeconfig(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("the kubeconfig {}", path.display()))?
        }
        ApiSource::InCluster => Config::incluster().context("the in-cluster Kubernetes configuration")?,
    };
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).context("a Kubernetes API client")?;
    Ok((client, url))
}

/// Watches the pods of `settings.node_name` into `store` until the runtime ends.
pub fn spawn(client: Client, url: String, settings: &KubeSettings, store: Arc<PodStore>) {
    let node = settings.node_name.clone();
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::all(client);
        let selector = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let mut events = watcher::watcher(pods, selector).default_backoff().boxed();
        let mut watch = Watch { store, node, url, listing: None, lists: 0, warned: false, started: Instant::now() };
        while let Some(event) = events.next().await {
            watch.handle(event);
        }
    });
}

struct Watch {
    store: Arc<PodStore>,
    node: String,
    url: String,
    /// The pods of a list under way (replaced into the store when it is whole).
    listing: Option<Vec<PodMeta>>,
    lists: u64,
    /// This outage has had its warning.
    warned: bool,
    started: Instant,
}

impl Watch {
    fn handle(&mut self, event: Result<Event<Pod>, watcher::Error>) {
        match event {
            Ok(Event::Init) => self.listing = Some(Vec::new()),
            Ok(Event::InitApply(pod)) => {
                if let (Some(listing), Some(meta)) = (self.listing.as_mut(), PodMeta::from_pod(&pod)) {
                    listing.push(meta);
                }
            }
            Ok(Event::InitDone) => {
                let pods = self.listing.take().unwrap_or_default();
                let count = pods.len();
                self.store.replace(pods);
                self.lists += 1;
                if self.lists == 1 {
                    console::line(&format!(
                        "observer: kubernetes: {count} pods of node {} listed from {} in {} ms",
                        self.node,
                        self.url,
                        self.started.elapsed().as_millis()
                    ));
                } else {
                    self.store.stats.relists.fetch_add(1, Ordering::Relaxed);
                }
                self.up(Some(count));
            }
            Ok(Event::Apply(pod)) => {
                if let Some(meta) = PodMeta::from_pod(&pod) {
                    self.store.apply(meta);
                }
                self.up(None);
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    self.store.delete(uid);
                }
                self.up(None);
            }
            Err(e) => {
                self.store.stats.watch_errors.fetch_add(1, Ordering::Relaxed);
                // An expired watch (410 Gone: etcd compacted past it) is
                // routine: the watcher lists again at once.
                if matches!(&e, watcher::Error::WatchError(s) if s.code == 410) {
                    tracing::debug!("kubernetes: the pod watch expired; listing again");
                } else {
                    self.down(&e);
                }
            }
        }
    }

    /// The API server answered; `listed`: a (re-)list of that many pods completed.
    fn up(&mut self, listed: Option<usize>) {
        self.store.stats.api_up.store(true, Ordering::Relaxed);
        if std::mem::take(&mut self.warned) {
            let pods = listed.unwrap_or_else(|| self.store.snapshot().by_uid.len());
            console::line(&format!("observer: kubernetes: the API server at {} answers again ({pods} pods)", self.url));
        }
    }

    /// One warning per outage (its first error).
    fn down(&mut self, error: &watcher::Error) {
        self.store.stats.api_up.store(false, Ordering::Relaxed);
        if std::mem::replace(&mut self.warned, true) {
            tracing::debug!("kubernetes: pod watch: {error}");
            return;
        }
        let why = match status(error) {
            Some((403, message)) => format!(
                "forbidden (HTTP 403: the agent's identity may not list and watch pods; grant it get, list and watch on pods): {message}"
            ),
            Some((401, message)) => format!("unauthorized (HTTP 401: the token is not accepted): {message}"),
            Some((code, message)) => format!("HTTP {code}: {message}"),
            None => chain(error),
        };
        tracing::warn!(
            "kubernetes: cannot watch the pods of node {} at {}: {why}; pods are known by their cgroup paths only until it answers (retrying with backoff)",
            self.node,
            self.url
        );
    }
}

/// The HTTP status and message an API error carries.
fn status(error: &watcher::Error) -> Option<(u16, String)> {
    let status = match error {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            match e {
                ::kube::Error::Api(s) => s,
                _ => return None,
            }
        }
        watcher::Error::WatchError(s) => s,
        watcher::Error::NoResourceVersion => return None,
    };
    Some((status.code, status.message.clone()))
}

/// The error and its causes, on one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
