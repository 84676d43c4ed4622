//! A recorder of every pod event in a namespace, from the real `kubectl get
//! --watch`, so a test can check a rollout invariant at every instant the API
//! server published, not only at the instants it happened to poll.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;
use staticpod_api::REVISION_ANNOTATION;
use staticpod_api::conventions::{UPGRADE_REQUEST_ANNOTATION, mirror_pod_name};

use crate::cluster::{Cluster, pod_is_ready};

/// Records pod watch events (`{"type": ..., "object": ...}`) and when each
/// arrived, until dropped.
pub struct PodWatch {
    child: Child,
    events: Arc<(Mutex<Vec<Recorded>>, Condvar)>,
}

/// One watch event and when this process read it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// When it arrived.
    pub at: Instant,
    /// The event, `{"type": ..., "object": ...}`.
    pub event: Value,
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
        let events = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            let stream = serde_json::Deserializer::from_reader(BufReader::new(stdout));
            for event in stream.into_iter::<Value>().map_while(|e| e.ok()) {
                let at = Instant::now();
                sink.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Recorded { at, event });
                sink.1.notify_all();
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

    /// Waits for the first event at index `from` or later that satisfies `wanted`
    /// and returns its index and record, or `None` after `timeout`.
    pub fn next_event(
        &self,
        from: usize,
        timeout: Duration,
        mut wanted: impl FnMut(&Value) -> bool,
    ) -> Option<(usize, Recorded)> {
        let deadline = Instant::now() + timeout;
        let mut events = self.lock();
        let mut next = from;
        loop {
            while next < events.len() {
                if wanted(&events[next].event) {
                    return Some((next, events[next].clone()));
                }
                next += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            events = self
                .events
                .1
                .wait_timeout(events, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Whether a pod whose name starts with `prefix` was deleted since the watch
    /// began (for a mirror pod: the kubelet is replacing it).
    pub fn saw_deleted(&self, prefix: &str) -> bool {
        self.lock().iter().map(|r| &r.event).any(|e| {
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
        self.worst_moment(static_pod, target, nodes).0
    }

    /// Like [`Self::most_unavailable`], with the nodes down at the worst moment,
    /// why, and what arrived when (for a failure message).
    pub fn worst_moment(
        &self,
        static_pod: &str,
        target: &str,
        nodes: &[String],
    ) -> (usize, String) {
        let mut pods: BTreeMap<String, Value> = BTreeMap::new();
        let mut seen: std::collections::HashSet<String> = Default::default();
        let mut worst = (0, String::new());
        let events = self.lock();
        let start = events.first().map(|r| r.at);
        let prefix = format!("{static_pod}-");
        // The StaticPod's last events before each moment, to show how it came about.
        let mut trail: std::collections::VecDeque<String> = Default::default();
        for record in events.iter() {
            let event = &record.event;
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
            if name.starts_with(&prefix) {
                let a = &object["metadata"]["annotations"];
                let at = start
                    .map(|s| record.at.duration_since(s).as_millis())
                    .unwrap_or(0);
                trail.push_back(format!(
                    "+{at}ms {} {name} rv={} revision={} request={} ready={}",
                    event["type"].as_str().unwrap_or("?"),
                    object["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("?"),
                    a[REVISION_ANNOTATION].as_str().unwrap_or("-"),
                    a[UPGRADE_REQUEST_ANNOTATION].as_str().unwrap_or("-"),
                    pod_is_ready(object)
                ));
                if trail.len() > 12 {
                    trail.pop_front();
                }
            }
            let down: Vec<String> = nodes
                .iter()
                .map(|node| mirror_pod_name(static_pod, node))
                .filter(|name| seen.contains(name))
                .filter_map(|name| match pods.get(&name) {
                    None => Some(format!("{name}: gone")),
                    Some(pod) => {
                        let annotations = &pod["metadata"]["annotations"];
                        let current = annotations[REVISION_ANNOTATION].as_str() == Some(target);
                        let requested =
                            annotations[UPGRADE_REQUEST_ANNOTATION].as_str() == Some(target);
                        if requested && !current {
                            Some(format!("{name}: requested"))
                        } else if current && !pod_is_ready(pod) {
                            Some(format!("{name}: on target, not Ready"))
                        } else {
                            None
                        }
                    }
                })
                .collect();
            if down.len() > worst.0 {
                let at = start
                    .map(|s| record.at.duration_since(s).as_millis())
                    .unwrap_or(0);
                worst = (
                    down.len(),
                    format!(
                        "at +{at} ms, after {} {name}: {}; events before:\n  {}",
                        event["type"].as_str().unwrap_or("?"),
                        down.join(", "),
                        Vec::from(trail.clone()).join("\n  ")
                    ),
                );
            }
        }
        worst
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Recorded>> {
        self.events.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
