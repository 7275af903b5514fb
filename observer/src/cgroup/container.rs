//! cgroup v2 path → container id, pod uid and QoS class.
//!
//! Only the path is used: it is all the kernel gives us for a socket or a task,
//! and the container runtimes and the kubelet encode what we need in it. Forms:
//!
//! | driver   | runtime    | container cgroup (under the pod cgroup)       |
//! |----------|------------|-----------------------------------------------|
//! | systemd  | containerd | `cri-containerd-<id>.scope`                   |
//! | systemd  | CRI-O      | `crio-<id>.scope` (+ `crio-conmon-<id>.scope`)|
//! | systemd  | Docker     | `docker-<id>.scope` (cri-dockerd)             |
//! | cgroupfs | any        | `<id>` (CRI-O: `crio-<id>`)                   |
//!
//! Pod cgroups: systemd `kubepods[-<qos>]-pod<uid with '_' for '-'>.slice`,
//! cgroupfs `kubepods/[<qos>/]pod<uid>`; no QoS level means Guaranteed.
//! Plain Docker: `/system.slice/docker-<id>.scope` or `/docker/<id>`.
//!
//! Anything may sit above these (a kind/k3d node is itself a container, its
//! kubelet's hierarchy is `kubelet.slice/kubelet-kubepods.slice/...`; paths read
//! through a cgroup namespace start with `/..`), so each component is judged on
//! its own and the innermost container wins. Unknown forms give `None`: the
//! caller keeps the plain cgroup path, never an error.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    /// cgroupfs paths (`.../pod<uid>/<id>`) do not name the runtime.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// What a cgroup path says about the workload in it. Either `container_id` or
/// `pod_uid` is set: a pod-level cgroup has only the pod, a plain Docker
/// container only the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    pub runtime: Runtime,
    /// 64 lowercase hex digits.
    pub container_id: Option<String>,
    /// With dashes (systemd paths spell them '_'); 32 hex digits for static pods,
    /// whose uid the kubelet derives from a hash of the manifest.
    pub pod_uid: Option<String>,
    pub qos: Option<Qos>,
    /// CRI-O's `crio-conmon-<id>.scope`: the conmon monitor of container `<id>`,
    /// not the container itself. It is kept (it is still that pod's and that
    /// container's overhead) but marked, so `container.id` is not claimed for
    /// conmon's own processes.
    pub conmon: bool,
}

/// Parses a cgroup v2 path (as in `/proc/<pid>/cgroup` or relative to the
/// cgroup2 mount). Never panics; `None` for anything that is not a container or
/// pod cgroup.
pub fn parse(path: &str) -> Option<Container> {
    let mut found: Option<Container> = None;
    let mut prev = "";
    // Whether `prev` was a pod cgroup: container cgroups are its direct children.
    let mut prev_pod = false;
    for part in path.split('/').filter(|p| !p.is_empty() && *p != "." && *p != "..") {
        if let Some((uid, qos)) = pod(part, prev) {
            // A new pod (a nested node's) replaces whatever was outside it.
            found = Some(Container {
                runtime: Runtime::Unknown,
                container_id: None,
                pod_uid: Some(uid),
                qos,
                conmon: false,
            });
            prev_pod = true;
        } else if let Some((runtime, id, conmon)) = container(part, prev, prev_pod) {
            // The pod applies only to its own direct children.
            let (pod_uid, qos) = match found.take() {
                Some(c) if prev_pod => (c.pod_uid, c.qos),
                _ => (None, None),
            };
            found = Some(Container { runtime, container_id: Some(id), pod_uid, qos, conmon });
            prev_pod = false;
        } else {
            // Anything below a container (crun's `container` subgroup, a
            // nested `init.scope`) still belongs to it.
            prev_pod = false;
        }
        prev = part;
    }
    found
}

/// A pod cgroup: systemd `...kubepods[-<qos>]-pod<uid>.slice` (the slice name
/// repeats its parents, so it is self-describing) or cgroupfs `pod<uid>`, whose
/// QoS is its parent directory.
fn pod(part: &str, prev: &str) -> Option<(String, Option<Qos>)> {
    if let Some(name) = part.strip_suffix(".slice") {
        let (parent, uid) = name.rsplit_once("-pod")?;
        let uid = pod_uid(&uid.replace('_', "-"))?;
        let qos = if parent == "kubepods" || parent.ends_with("-kubepods") {
            Qos::Guaranteed
        } else {
            let (parent, qos) = parent.rsplit_once('-')?;
            if parent != "kubepods" && !parent.ends_with("-kubepods") {
                return None;
            }
            qos_name(qos)?
        };
        return Some((uid, Some(qos)));
    }
    let uid = pod_uid(part.strip_prefix("pod")?)?;
    let qos = if prev == "kubepods" { Some(Qos::Guaranteed) } else { qos_name(prev) };
    Some((uid, qos))
}

fn qos_name(s: &str) -> Option<Qos> {
    match s {
        "burstable" => Some(Qos::Burstable),
        "besteffort" => Some(Qos::BestEffort),
        _ => None,
    }
}

/// A pod uid is a UUID, or 32 hex digits for static pods.
fn pod_uid(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let ok = match b.len() {
        32 => is_hex(s),
        36 => b
            .iter()
            .enumerate()
            .all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() }),
        _ => false,
    };
    ok.then(|| s.to_ascii_lowercase())
}

/// A container cgroup. Runtime prefixes with `.scope` are distinctive enough to
/// trust anywhere (CRI-O may put conmon in `system.slice`; a cgroup namespace
/// may hide the pod); bare ids and unknown prefixes only directly under a pod
/// or under Docker's cgroupfs `docker/`.
fn container(part: &str, prev: &str, prev_pod: bool) -> Option<(Runtime, String, bool)> {
    if is_id(part) {
        return match (prev_pod, prev) {
            (true, _) => Some((Runtime::Unknown, part.to_owned(), false)),
            (false, "docker") => Some((Runtime::Docker, part.to_owned(), false)),
            _ => None,
        };
    }
    let (name, scope) = match part.strip_suffix(".scope") {
        Some(name) => (name, true),
        None => (part, false),
    };
    let (prefix, id) = name.rsplit_once('-')?;
    if !is_id(id) {
        return None;
    }
    let (runtime, conmon) = match prefix {
        "cri-containerd" => (Runtime::Containerd, false),
        "crio" => (Runtime::CriO, false),
        "crio-conmon" => (Runtime::CriO, true),
        "docker" => (Runtime::Docker, false),
        _ if prev_pod => (Runtime::Unknown, false),
        _ => return None,
    };
    (scope || prev_pod).then(|| (runtime, id.to_owned(), conmon))
}

/// Container ids are 64 lowercase hex digits (Docker, containerd and CRI-O alike).
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4b5a8f0e2c1d3b6a7980f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f40";
    const UID: &str = "0f1d2e3c-4b5a-6978-8a9b-0c1d2e3f4a5b";
    const UID_: &str = "0f1d2e3c_4b5a_6978_8a9b_0c1d2e3f4a5b";

    fn ctr(runtime: Runtime, pod: Option<&str>, qos: Option<Qos>) -> Option<Container> {
        Some(Container { runtime, container_id: Some(ID.into()), pod_uid: pod.map(Into::into), qos, conmon: false })
    }

    fn pod_only(uid: &str, qos: Qos) -> Option<Container> {
        Some(Container {
            runtime: Runtime::Unknown,
            container_id: None,
            pod_uid: Some(uid.into()),
            qos: Some(qos),
            conmon: false,
        })
    }

    fn p(s: &str) -> Option<Container> {
        parse(s)
    }

    #[test]
    fn systemd_containerd_burstable() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(p(&path), ctr(Runtime::Containerd, Some(UID), Some(Qos::Burstable)));
    }

    #[test]
    fn systemd_crio_burstable() {
        let path =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope");
        assert_eq!(p(&path), ctr(Runtime::CriO, Some(UID), Some(Qos::Burstable)));
    }

    #[test]
    fn systemd_crio_crun_container_subgroup() {
        // crun on cgroup v2 puts the payload in a `container` child of the scope.
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope/container"
        );
        assert_eq!(p(&path), ctr(Runtime::CriO, Some(UID), Some(Qos::Burstable)));
    }

    #[test]
    fn systemd_crio_conmon_is_marked() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope"
        );
        let mut want = ctr(Runtime::CriO, Some(UID), Some(Qos::Burstable)).unwrap();
        want.conmon = true;
        assert_eq!(p(&path), Some(want));
    }

    #[test]
    fn crio_conmon_in_system_slice() {
        // Older CRI-O defaults to conmon_cgroup = "system.slice".
        let got = p(&format!("/system.slice/crio-conmon-{ID}.scope")).unwrap();
        assert_eq!(
            (got.runtime, got.container_id.as_deref(), got.pod_uid, got.conmon),
            (Runtime::CriO, Some(ID), None, true)
        );
    }

    #[test]
    fn systemd_docker_in_pod() {
        let path =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope");
        assert_eq!(p(&path), ctr(Runtime::Docker, Some(UID), Some(Qos::Burstable)));
    }

    #[test]
    fn systemd_guaranteed() {
        let path = format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope");
        assert_eq!(p(&path), ctr(Runtime::Containerd, Some(UID), Some(Qos::Guaranteed)));
    }

    #[test]
    fn systemd_besteffort() {
        let path = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(p(&path), ctr(Runtime::Containerd, Some(UID), Some(Qos::BestEffort)));
    }

    #[test]
    fn systemd_static_pod_hash_uid() {
        // kube-apiserver & co.: the uid is an md5 of the manifest, no dashes.
        let uid = "9a1c2d3e4f5061728394a5b6c7d8e9f0";
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(p(&path), ctr(Runtime::Containerd, Some(uid), Some(Qos::Burstable)));
    }

    #[test]
    fn systemd_pod_level() {
        let path = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        assert_eq!(p(&path), pod_only(UID, Qos::Burstable));
        assert_eq!(p(&format!("/kubepods.slice/kubepods-pod{UID_}.slice")), pod_only(UID, Qos::Guaranteed));
    }

    #[test]
    fn cgroupfs_burstable() {
        assert_eq!(
            p(&format!("/kubepods/burstable/pod{UID}/{ID}")),
            ctr(Runtime::Unknown, Some(UID), Some(Qos::Burstable))
        );
    }

    #[test]
    fn cgroupfs_guaranteed() {
        assert_eq!(p(&format!("/kubepods/pod{UID}/{ID}")), ctr(Runtime::Unknown, Some(UID), Some(Qos::Guaranteed)));
    }

    #[test]
    fn cgroupfs_besteffort() {
        assert_eq!(
            p(&format!("/kubepods/besteffort/pod{UID}/{ID}")),
            ctr(Runtime::Unknown, Some(UID), Some(Qos::BestEffort))
        );
    }

    #[test]
    fn cgroupfs_crio() {
        assert_eq!(
            p(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}")),
            ctr(Runtime::CriO, Some(UID), Some(Qos::BestEffort))
        );
    }

    #[test]
    fn cgroupfs_pod_level() {
        assert_eq!(p(&format!("/kubepods/burstable/pod{UID}")), pod_only(UID, Qos::Burstable));
    }

    #[test]
    fn docker_systemd() {
        assert_eq!(p(&format!("/system.slice/docker-{ID}.scope")), ctr(Runtime::Docker, None, None));
    }

    #[test]
    fn docker_cgroupfs() {
        assert_eq!(p(&format!("/docker/{ID}")), ctr(Runtime::Docker, None, None));
    }

    #[test]
    fn kind_node_inside_container() {
        // What the kind node itself sees (its own cgroup namespace).
        let path = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(p(&path), ctr(Runtime::Containerd, Some(UID), Some(Qos::BestEffort)));
        let path =
            format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope");
        assert_eq!(p(&path), ctr(Runtime::Containerd, Some(UID), Some(Qos::Guaranteed)));
    }

    #[test]
    fn kind_node_seen_from_host_innermost_wins() {
        let node = "1111111111111111111111111111111111111111111111111111111111111111";
        let path = format!(
            "/system.slice/docker-{node}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(p(&path), ctr(Runtime::Containerd, Some(UID), Some(Qos::Burstable)));
        // The node's own containerd is the node container's.
        let got = p(&format!("/system.slice/docker-{node}.scope/system.slice/containerd.service")).unwrap();
        assert_eq!((got.runtime, got.container_id.as_deref()), (Runtime::Docker, Some(node)));
    }

    #[test]
    fn k3d_cgroupfs_under_docker() {
        let node = "2222222222222222222222222222222222222222222222222222222222222222";
        let path = format!("/docker/{node}/kubepods/burstable/pod{UID}/{ID}");
        assert_eq!(p(&path), ctr(Runtime::Unknown, Some(UID), Some(Qos::Burstable)));
    }

    #[test]
    fn cgroup_namespace_relative_paths() {
        // A sibling container of the reader's pod, and another pod on the node.
        assert_eq!(p(&format!("/../cri-containerd-{ID}.scope")), ctr(Runtime::Containerd, None, None));
        let path = format!("/../../kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope");
        assert_eq!(p(&path), ctr(Runtime::Containerd, Some(UID), Some(Qos::Burstable)));
        let path = format!("/../../../kubepods/pod{UID}/{ID}");
        assert_eq!(p(&path), ctr(Runtime::Unknown, Some(UID), Some(Qos::Guaranteed)));
    }

    #[test]
    fn non_kubernetes_paths_are_none() {
        for path in [
            "/",
            "/user.slice/user-1000.slice/session-3.scope",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-1234.scope",
            "/system.slice/sshd.service",
            "/system.slice/containerd.service",
            "/init.scope",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods/burstable",
            // Not 64 hex digits / not a uid.
            "/system.slice/docker-abc123.scope",
            "/docker/abc123",
            "/kubepods/burstable/podnot-a-uid/abc",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podxyz.slice",
            // A pod-like slice outside kubepods.
            &format!("/system.slice/foo-pod{UID_}.slice"),
            // A bare id not under a pod or docker/.
            &format!("/system.slice/{ID}"),
            &format!("/system.slice/nerdctl-{ID}.scope"),
        ] {
            assert_eq!(p(path), None, "{path}");
        }
    }

    #[test]
    fn serializes_with_plain_names() {
        let c = ctr(Runtime::CriO, Some(UID), Some(Qos::BestEffort)).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!((v["runtime"].as_str(), v["qos"].as_str()), (Some("cri-o"), Some("besteffort")));
    }

    #[test]
    fn odd_input_never_panics() {
        let long = format!("/{}", "a/".repeat(100_000));
        let long_pod = format!("/kubepods/pod{}", "f".repeat(1_000_000));
        for s in [
            "",
            "/",
            "//////",
            "..",
            "/../../..",
            "-",
            ".slice",
            "-pod.slice",
            "pod",
            ".scope",
            "-.scope",
            "crio-conmon-.scope",
            "/kubepods/pod",
            "/kubepods.slice/kubepods-pod.slice",
            "/kubepods.slice/kubepods-burstable-pod__________________________________.slice",
            "/kubepods/burstable/pod0f1d2e3c-4b5a-6978-8a9b-0c1d2e3f4a5bé",
            "/kubepods/burstable/podé0f1d2e3c-4b5a-6978-8a9b-0c1d2e3",
            "/\u{0}/\u{fffd}\u{fffd}/🦀-pod🦀.slice/🦀.scope",
            "\u{fffd}docker-\u{fffd}.scope",
            &long,
            &long_pod,
        ] {
            let _ = parse(s);
        }
    }
}
