//! One resource per observed workload: the workload, not the agent, is what
//! the trace is about. The node's attributes (`OTEL_RESOURCE_ATTRIBUTES`,
//! `host.name`) come first and the workload's own attributes win over them.

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;

use super::{attributes as attr, config::NodeResource};
use crate::workload::Identity;

/// This machine's name (`gethostname`). In a pod without host networking it
/// is the pod's name: a DaemonSet sets `host.name` in `OTEL_RESOURCE_ATTRIBUTES`
/// from the node's name instead, which wins over this.
pub fn host_name() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    (!name.is_empty()).then_some(name)
}

/// The resource of one workload. `Resource::builder_empty()`: the SDK's
/// default detectors would add the agent's own `service.name` and read the
/// process environment.
pub fn workload_resource(identity: &Identity, node: &NodeResource) -> Resource {
    let mut node_kvs: Vec<KeyValue> = Vec::with_capacity(node.attributes.len() + 1);
    if let Some(host) = &node.host_name {
        node_kvs.push(KeyValue::new(attr::HOST_NAME, host.clone()));
    }
    node_kvs.extend(node.attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())));
    Resource::builder_empty().with_attributes(node_kvs).with_attributes(attr::workload_attributes(identity)).build()
}

#[cfg(test)]
mod tests {
    use opentelemetry::{Key, Value};

    use super::*;
    use crate::cgroup::container::Runtime;

    fn get(resource: &Resource, key: &'static str) -> Option<Value> {
        resource.get(&Key::from_static_str(key))
    }

    #[test]
    fn single_process_go_workload() {
        let identity = Identity {
            service_name: "checkout".into(),
            cgroup_id: Some(7),
            cgroup_path: Some("/kubepods.slice/x.scope".into()),
            container_id: Some("8b3f".into()),
            container_runtime: Some(Runtime::CriO),
            k8s_pod_uid: Some("0f5e".into()),
            pid: Some(4242),
            executable_name: Some("server".into()),
            go_version: Some("go1.26.8".into()),
            ..Default::default()
        };
        let node = NodeResource {
            attributes: vec![
                ("k8s.cluster.name".into(), "prod".into()),
                ("service.name".into(), "the-agent".into()),
                ("host.name".into(), "node-a".into()),
            ],
            host_name: Some("pod-hostname".into()),
        };
        let r = workload_resource(&identity, &node);
        assert_eq!(get(&r, "service.name"), Some("checkout".into()));
        // The variable's host.name wins over gethostname.
        assert_eq!(get(&r, "host.name"), Some("node-a".into()));
        assert_eq!(get(&r, "k8s.cluster.name"), Some("prod".into()));
        assert_eq!(get(&r, "container.id"), Some("8b3f".into()));
        assert_eq!(get(&r, "container.runtime.name"), Some("cri-o".into()));
        assert_eq!(get(&r, "k8s.pod.uid"), Some("0f5e".into()));
        assert_eq!(get(&r, "process.pid"), Some(Value::I64(4242)));
        assert_eq!(get(&r, "process.executable.name"), Some("server".into()));
        assert_eq!(get(&r, "process.runtime.name"), Some("go".into()));
        assert_eq!(get(&r, "process.runtime.version"), Some("go1.26.8".into()));
        assert_eq!(get(&r, "telemetry.sdk.name"), None);
    }

    #[test]
    fn cgroup_workload_has_no_process_attributes() {
        let identity = Identity {
            service_name: "".into(),
            executable_name: Some("server".into()),
            go_version: Some("go1.26.8".into()),
            ..Default::default()
        };
        let r = workload_resource(&identity, &NodeResource { attributes: vec![], host_name: Some("h".into()) });
        assert_eq!(get(&r, "service.name"), Some("unknown_service".into()));
        assert_eq!(get(&r, "host.name"), Some("h".into()));
        for key in ["process.pid", "process.executable.name", "process.runtime.name", "process.runtime.version"] {
            assert_eq!(get(&r, key), None, "{key}");
        }
    }

    #[test]
    fn host_name_is_this_machines() {
        assert!(host_name().is_some_and(|h| !h.is_empty()));
    }
}
