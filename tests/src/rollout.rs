//! What the rollout end-to-end tests share: StaticPod and static-pod manifest
//! builders, reading mirror pods and the `kubectl get staticpod` row, and starting
//! the agents and the controller the way an install runs them.

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::cluster::{Cluster, free_port, http_request, pod_is_ready, wait_for, write_manifest};

/// A StaticPod `name` in `default` whose manifest file is `<name>.yaml`, with one
/// container `name` running `image`.
pub fn static_pod(name: &str, mode: &str, max_unavailable: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps.openyurt.io/v1alpha1", "kind": "StaticPod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "staticPodManifest": name,
            "upgradeStrategy": {"type": mode, "maxUnavailable": max_unavailable},
            "template": {"spec": {"containers": [{"name": name, "image": image}]}}
        }
    })
}

/// The plain manifest of a one-container pod, as a node installer would drop it.
pub fn plain_manifest(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  containers:\n  - name: {name}\n    image: {image}\n"
    )
}

/// The image of a pod's first container (`""` if none).
pub fn image(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

impl Cluster {
    /// `kubectl apply -f -` of `object`; fails with kubectl's message.
    pub fn apply_json(&self, object: &Value) -> Result<()> {
        let out = self.kubectl_with_input(&["apply", "-f", "-"], &object.to_string())?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// The mirror pods of StaticPod `name` in `default` (`<name>-node-…`); empty
    /// if kubectl fails.
    pub fn mirror_pods(&self, name: &str) -> Vec<Value> {
        let prefix = format!("{name}-node-");
        self.kubectl_json(&["get", "pods", "-n", "default"])
            .map(|list| list["items"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .collect()
    }

    /// `kubectl get staticpods <name> --no-headers`, split on whitespace
    /// (`NAME AGE TOTALNUMBER READYNUMBER UPGRADEDNUMBER`).
    pub fn static_pod_row(&self, name: &str) -> Option<Vec<String>> {
        let table = self
            .kubectl(&["get", "staticpods", name, "--no-headers"])
            .ok()?;
        Some(table.split_whitespace().map(str::to_owned).collect())
    }

    /// Drops `<name>.yaml` running `image` into the static-pod directory of the
    /// nodes `indices` and waits until their mirror pods are Ready.
    pub fn install_static_pods(&self, name: &str, image: &str, indices: &[usize]) -> Result<()> {
        let manifest = plain_manifest(name, image);
        for &index in indices {
            write_manifest(&self.node(index)?.manifest_dir, name, &manifest)?;
        }
        wait_for(
            &format!("{name} mirror pods Ready"),
            Duration::from_secs(90),
            || {
                let ready = self
                    .mirror_pods(name)
                    .iter()
                    .filter(|p| pod_is_ready(p))
                    .count();
                Ok((ready == indices.len()).then_some(()))
            },
        )
    }

    /// Node names, in order.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes().iter().map(|n| n.name.clone()).collect()
    }

    /// Starts controller component `name` with `extra_args` and its metrics on a
    /// free loopback port, and waits until `/readyz` answers 200 (caches synced;
    /// standbys too). Returns the metrics port.
    pub fn start_controller_ready(&self, name: &str, extra_args: &[String]) -> Result<u16> {
        let port = free_port()?;
        let mut args = vec![format!("--metrics-listen=127.0.0.1:{port}")];
        args.extend_from_slice(extra_args);
        self.start_controller_named(name, &args)?;
        wait_for("controller ready", Duration::from_secs(30), || {
            self.check_alive()?;
            Ok(http_request(port, "GET", "/readyz")
                .ok()
                .filter(|(status, _)| *status == 200)
                .map(|_| ()))
        })?;
        Ok(port)
    }

    /// What a rollout test needs: one agent per node (verifying for
    /// `verify_timeout_seconds`), the CRD, and the controller (component
    /// `controller`), each as its ServiceAccount. Returns the agents' OTA ports
    /// and the controller's metrics port.
    pub fn start_rollout_system(&self, verify_timeout_seconds: u64) -> Result<(Vec<u16>, u16)> {
        let mut ota_ports = Vec::new();
        for index in 0..self.nodes().len() {
            let port = free_port()?;
            self.start_agent(index, port, verify_timeout_seconds)?;
            ota_ports.push(port);
        }
        self.install_crd()?;
        let metrics_port = self.start_controller_ready("controller", &[])?;
        Ok((ota_ports, metrics_port))
    }
}
