//! Names shared by the controller, the node agent and the plugin: how a StaticPod's
//! manifest ConfigMap and mirror pods are found, and the annotations and conditions
//! through which they talk.

/// Label on a manifest ConfigMap naming its StaticPod.
pub const STATIC_POD_LABEL: &str = "apps.openyurt.io/staticpod";
/// Annotation on a mirror pod asking that node's agent to install a revision.
pub const UPGRADE_REQUEST_ANNOTATION: &str = "apps.openyurt.io/upgrade-request";
/// Annotation on a mirror pod recording an upgrade the agent rolled back
/// (`<revision>: <reason>`).
pub const UPGRADE_FAILURE_ANNOTATION: &str = "apps.openyurt.io/upgrade-failure";
/// Pod condition set in ota mode: `True` while the pod runs an old revision.
pub const POD_NEED_UPGRADE: &str = "PodNeedUpgrade";
/// Annotation on the manifest ConfigMap in which the controller records, before it
/// asks them, the nodes it asked to upgrade to the current revision. A node's mirror
/// pod vanishes while the kubelet replaces it; this record keeps such a node in the
/// window across controller restarts. JSON:
/// `{"revision": "...", "nodes": {"node-1": {"at": <unix seconds>, "pod": "<uid of the pod asked>"}}}`.
pub const UPGRADING_ANNOTATION: &str = "apps.openyurt.io/upgrading";

/// The ConfigMap holding a StaticPod's rendered manifest, in its namespace.
pub fn manifest_configmap_name(static_pod: &str) -> String {
    format!("staticpod-{static_pod}")
}

/// The kubelet names a static pod's mirror pod `<pod name>-<node name>`.
pub fn mirror_pod_name(static_pod: &str, node: &str) -> String {
    format!("{static_pod}-{node}")
}

/// The StaticPod a mirror pod on `node` belongs to: its name without the
/// `-<node>` suffix (only the suffix, so names that contain the node name
/// elsewhere still resolve).
pub fn static_pod_of_mirror<'a>(pod_name: &'a str, node: &str) -> Option<&'a str> {
    pod_name
        .strip_suffix(node)
        .and_then(|rest| rest.strip_suffix('-'))
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_pod_names_round_trip() {
        assert_eq!(mirror_pod_name("nginx", "node-2"), "nginx-node-2");
        assert_eq!(
            static_pod_of_mirror("nginx-node-2", "node-2"),
            Some("nginx")
        );
        assert_eq!(
            static_pod_of_mirror("node-2-proxy-node-2", "node-2"),
            Some("node-2-proxy")
        );
        assert_eq!(static_pod_of_mirror("nginx-node-3", "node-2"), None);
        assert_eq!(static_pod_of_mirror("-node-2", "node-2"), None);
        assert_eq!(static_pod_of_mirror("nginxnode-2", "node-2"), None);
    }
}
