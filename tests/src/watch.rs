//! A recorder of every pod event in a namespace, from the real `kubectl get
//! --watch`, so a test can check a rollout invariant at every instant the API
//! server published, not only at the instants it happened to poll.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde_json::Value;
use staticpod_api::REVISION_ANNOTATION;
use staticpod_api::conventions::{UPGRADE_REQUEST_ANNOTATION, mirror_pod_name};

use crate::cluster::{Cluster, pod_is_ready};

/// Records pod watch events (`{"type": ..., "object": ...}`) until dropped.
pub struct PodWatch {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
}

impl PodWatch {
    /// Starts `kubectl get pods -n <namespace> --watch`; the first events are the
    /// pods that exist now.
    pub fn start(cluster: &Cluster, namespace: &str) -> Result<Self> {
        let mut child = Command::new(cluster.bin_dir().join("kubectl"))
            .arg(format!("--kubeconfig={}", cluster.kubeconfig().display()))
            .args(["get", "pods", "-n", namespace, "--watch", "-o", "json"])
            .arg("--output-watch-events")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to run kubectl get --watch")?;
        let stdout = child.stdout.take().context("kubectl stdout")?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            let stream = serde_json::Deserializer::from_reader(BufReader::new(stdout));
            for event in stream.into_iter::<Value>().map_while(|e| e.ok()) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(event);
            }
        });
        Ok(Self { child, events })
    }

    /// How many events were recorded so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a pod whose name starts with `prefix` was deleted since the watch
    /// began (for a mirror pod: the kubelet is replacing it).
    pub fn saw_deleted(&self, prefix: &str) -> bool {
        self.lock().iter().any(|e| {
            e["type"] == "DELETED"
                && e["object"]["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
        })
    }

    /// Replays the events in order and returns the largest number of nodes of
    /// StaticPod `static_pod` that were unavailable at once with respect to
    /// revision `target`: a node is unavailable while its mirror pod is gone
    /// (the kubelet is replacing it), while a request for `target` is pending on
    /// it, or while it runs `target` without being Ready.
    pub fn most_unavailable(&self, static_pod: &str, target: &str, nodes: &[String]) -> usize {
        let mut pods: BTreeMap<String, Value> = BTreeMap::new();
        let mut seen: std::collections::HashSet<String> = Default::default();
        let mut worst = 0;
        for event in self.lock().iter() {
            let object = &event["object"];
            let Some(name) = object["metadata"]["name"].as_str() else {
                continue;
            };
            if event["type"] == "DELETED" {
                pods.remove(name);
            } else {
                seen.insert(name.to_owned());
                pods.insert(name.to_owned(), object.clone());
            }
            let down = nodes
                .iter()
                .map(|node| mirror_pod_name(static_pod, node))
                .filter(|name| seen.contains(name))
                .filter(|name| match pods.get(name) {
                    None => true,
                    Some(pod) => {
                        let annotations = &pod["metadata"]["annotations"];
                        let current = annotations[REVISION_ANNOTATION].as_str() == Some(target);
                        let requested =
                            annotations[UPGRADE_REQUEST_ANNOTATION].as_str() == Some(target);
                        (requested && !current) || (current && !pod_is_ready(pod))
                    }
                })
                .count();
            worst = worst.max(down);
        }
        worst
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Value>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
