//! The agent's I/O shell: watch caches of this node's pods and the manifest
//! ConfigMaps, the upgrade procedure of SPEC §5 on top of [`crate::swap`], and the
//! [`crate::ota::NodeView`] the OTA API uses.
//!
//! RBAC: pods `get, list, watch, patch` (failure annotations); configmaps `get,
//! list, watch`; events.k8s.io events `create, patch`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use staticpod_api::conventions::{
    UPGRADE_FAILURE_ANNOTATION, UPGRADE_REQUEST_ANNOTATION, manifest_configmap_name,
    mirror_pod_name, static_pod_of_mirror,
};
use staticpod_api::{Revision, parse_manifest, pod_revision};
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::ota::{NodeView, UpgradeTarget};
use crate::swap::{Installed, Journal, ManifestName, ManifestStore, Recovery};

/// How one upgrade on this node ended (or where it is).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeRecord {
    /// `namespace/staticpod`.
    pub static_pod: String,
    /// The revision installed.
    pub revision: String,
    /// `Upgrading`, `Upgraded`, `RolledBack`, `AlreadyCurrent` or `Refused`.
    pub state: String,
    /// Why, for failures and refusals.
    pub reason: Option<String>,
    /// Seconds since the epoch when the state was reached.
    pub at: u64,
    /// Milliseconds from the request reaching the agent to the new file in place.
    pub swap_ms: Option<f64>,
}

/// One node's agent.
pub struct NodeAgent {
    client: Client,
    node: String,
    store: ManifestStore,
    pods: Store<Pod>,
    configmaps: Store<ConfigMap>,
    /// Woken by every pod watch event, so verification waits on events, not timers.
    pod_changed: Arc<Notify>,
    verify_timeout: Duration,
    recorder: Recorder,
    records: Mutex<Vec<UpgradeRecord>>,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    metrics: Arc<Metrics>,
    attempted: Mutex<std::collections::HashSet<(String, Option<String>)>>,
}

/// An upgrade waiting for the node's worker.
#[derive(Debug)]
pub struct Job {
    /// The StaticPod.
    pub target: UpgradeTarget,
    /// The revision a request named (`None` for an OTA trigger, which installs
    /// whatever the ConfigMap holds).
    pub revision: Option<Revision>,
    /// When the request reached the agent.
    pub queued: Instant,
}

/// The queue the node's worker drains.
pub type Jobs = tokio::sync::mpsc::UnboundedReceiver<Job>;

/// A manifest to install, read from a StaticPod's ConfigMap.
struct Rendered {
    name: ManifestName,
    revision: Revision,
    text: String,
}

impl NodeAgent {
    /// An agent over caches that the caller's watchers fill, and the queue its
    /// worker drains.
    pub fn new(
        client: Client,
        node: String,
        store: ManifestStore,
        pods: Store<Pod>,
        configmaps: Store<ConfigMap>,
        pod_changed: Arc<Notify>,
        verify_timeout: Duration,
    ) -> (Self, Jobs) {
        let (jobs, queue) = tokio::sync::mpsc::unbounded_channel();
        let reporter = Reporter {
            controller: "staticpod-agent".into(),
            instance: Some(node.clone()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let agent = Self {
            client,
            node,
            store,
            pods,
            configmaps,
            pod_changed,
            verify_timeout,
            recorder,
            records: Mutex::new(Vec::new()),
            jobs,
            metrics: Arc::new(Metrics::default()),
            attempted: Mutex::new(Default::default()),
        };
        (agent, queue)
    }

    /// Mirror pods on this node that carry a request this agent should act on: a
    /// revision they do not run and that has not already failed here.
    pub fn pending_requests(&self) -> Vec<(UpgradeTarget, Revision)> {
        let mut out = Vec::new();
        for pod in self.pods.state() {
            let Some(requested) =
                annotation(&pod, UPGRADE_REQUEST_ANNOTATION).and_then(Revision::parse)
            else {
                continue;
            };
            if pod_revision(&pod).as_ref() == Some(&requested)
                || failed_revision(&pod).as_ref() == Some(&requested)
            {
                continue;
            }
            let (Some(ns), Some(sp)) = (
                pod.namespace(),
                static_pod_of_mirror(&pod.name_any(), &self.node).map(str::to_owned),
            ) else {
                continue;
            };
            out.push((
                UpgradeTarget {
                    namespace: ns,
                    static_pod: sp,
                },
                requested,
            ));
        }
        out
    }

    /// After a restart: finish (verify, then commit or roll back) an upgrade that was
    /// in flight when the agent died.
    pub async fn recover(&self) -> anyhow::Result<()> {
        match self.store.recover()? {
            Recovery::Idle => Ok(()),
            Recovery::NotSwapped(journal) => {
                tracing::info!(manifest = %journal.manifest, "an upgrade had not swapped the file when the agent stopped; nothing to undo");
                Ok(())
            }
            Recovery::Swapped(journal) => {
                tracing::info!(manifest = %journal.manifest, revision = %journal.target_revision, "resuming the verification of an interrupted upgrade");
                let Some(revision) = Revision::parse(&journal.target_revision) else {
                    self.store.rollback(&journal)?;
                    return Ok(());
                };
                // The journal names the file, not the StaticPod; the mirror pod carrying
                // the revision tells which StaticPod it is.
                let owner = self.pods.state().into_iter().find_map(|p| {
                    let sp = static_pod_of_mirror(&p.name_any(), &self.node)?.to_owned();
                    Some(UpgradeTarget {
                        namespace: p.namespace()?,
                        static_pod: sp,
                    })
                    .filter(|_| {
                        pod_revision(&p).as_ref() == Some(&revision)
                            || annotation(&p, UPGRADE_REQUEST_ANNOTATION) == Some(revision.as_str())
                    })
                });
                match owner {
                    Some(target) => {
                        // A failed verification was rolled back and recorded: the agent goes on.
                        if let Err(e) = self.verify_or_roll_back(&target, &journal, &revision).await
                        {
                            tracing::warn!(error = %e, "the interrupted upgrade did not verify");
                        }
                        Ok(())
                    }
                    None => {
                        // Nothing shows the new revision running: put the old file back.
                        tracing::warn!(manifest = %journal.manifest, "no mirror pod shows the interrupted revision; rolling back");
                        self.store.rollback(&journal)?;
                        Ok(())
                    }
                }
            }
        }
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Queues an upgrade unless the same one is queued or was tried already (a
    /// revision that failed is not retried by itself).
    pub fn enqueue(&self, target: UpgradeTarget, revision: Option<Revision>) -> bool {
        let key = (
            format!("{}/{}", target.namespace, target.static_pod),
            revision.as_ref().map(|r| r.to_string()),
        );
        let fresh = self
            .attempted
            .lock()
            .map(|mut seen| seen.insert(key))
            .unwrap_or(false);
        if fresh || revision.is_none() {
            let _ = self.jobs.send(Job {
                target,
                revision,
                queued: Instant::now(),
            });
        }
        fresh
    }

    /// The per-node procedure of SPEC §5 (one at a time: a single worker drains the
    /// queue, after recovery) for `target` at `requested` (or at whatever
    /// its ConfigMap holds, for OTA triggers).
    pub async fn upgrade(&self, job: &Job) -> anyhow::Result<String> {
        let (target, requested) = (&job.target, job.revision.as_ref());
        let id = format!("{}/{}", target.namespace, target.static_pod);
        let rendered = match self.rendered(target) {
            Ok(rendered) => rendered,
            Err(why) => {
                self.record(
                    &id,
                    requested.map(|r| r.to_string()).unwrap_or_default(),
                    "Refused",
                    Some(why.clone()),
                );
                anyhow::bail!(why);
            }
        };
        if let Some(requested) = requested
            && requested != &rendered.revision
        {
            let why = format!(
                "the request names revision {requested} but the manifest ConfigMap holds {}: a stale request, ignored",
                rendered.revision
            );
            self.record(&id, requested.to_string(), "Refused", Some(why.clone()));
            anyhow::bail!(why);
        }
        let journal =
            match self
                .store
                .install(&rendered.name, &rendered.revision, &rendered.text)?
            {
                Installed::AlreadyCurrent => {
                    self.record(&id, rendered.revision.to_string(), "AlreadyCurrent", None);
                    return Ok("already current".into());
                }
                Installed::Swapped(journal) => journal,
            };
        let swap_ms = job.queued.elapsed().as_secs_f64() * 1e3;
        self.metrics.swapped_in(swap_ms / 1e3);
        self.record(&id, rendered.revision.to_string(), "Upgrading", None);
        if let Ok(mut records) = self.records.lock()
            && let Some(last) = records.last_mut()
        {
            last.swap_ms = Some(swap_ms);
        }
        self.event(
            target,
            EventType::Normal,
            "UpgradeStarted",
            format!(
                "installing revision {} on node {}",
                rendered.revision, self.node
            ),
        )
        .await;
        self.verify_or_roll_back(target, &journal, &rendered.revision)
            .await
    }

    async fn verify_or_roll_back(
        &self,
        target: &UpgradeTarget,
        journal: &Journal,
        revision: &Revision,
    ) -> anyhow::Result<String> {
        let id = format!("{}/{}", target.namespace, target.static_pod);
        let mirror = mirror_pod_name(&target.static_pod, &self.node);
        let key = ObjectRef::<Pod>::new(&mirror).within(&target.namespace);
        let started = Instant::now();
        let deadline = Instant::now() + self.verify_timeout;
        let verdict = loop {
            let changed = self.pod_changed.notified();
            if let Some(pod) = self.pods.get(&key)
                && pod_revision(&pod).as_ref() == Some(revision)
                && is_ready(&pod)
            {
                break Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let detail = self
                    .pods
                    .get(&key)
                    .map(|p| why_not_ready(&p))
                    .unwrap_or_else(|| "its mirror pod never appeared".into());
                // The revision travels with the reason (annotation `<rev>: <reason>`,
                // events), so the reason does not repeat it.
                break Err(format!(
                    "not Ready within {:?}: {detail}",
                    self.verify_timeout
                ));
            }
            let _ = tokio::time::timeout(left, changed).await;
        };
        self.metrics.verified_in(started.elapsed().as_secs_f64());
        match verdict {
            Ok(()) => {
                self.store.commit(journal)?;
                self.record(&id, revision.to_string(), "Upgraded", None);
                self.event(
                    target,
                    EventType::Normal,
                    "Upgraded",
                    format!("node {} runs revision {revision}", self.node),
                )
                .await;
                tracing::info!(static_pod = %id, %revision, "upgraded");
                Ok("upgraded".into())
            }
            Err(reason) => {
                self.store.rollback(journal)?;
                tracing::warn!(static_pod = %id, %revision, %reason, "rolled back");
                self.record(
                    &id,
                    revision.to_string(),
                    "RolledBack",
                    Some(reason.clone()),
                );
                self.mark_failed(target, revision, &reason).await;
                self.event(
                    target,
                    EventType::Warning,
                    "UpgradeFailed",
                    format!(
                        "node {}: revision {revision} {reason}; rolled back",
                        self.node
                    ),
                )
                .await;
                anyhow::bail!(reason)
            }
        }
    }

    /// Writes the failure onto the mirror pod that runs after the rollback (the
    /// kubelet replaces the pod when its manifest changes), so the controller and
    /// `kubectl` see it and the same revision is not requested again by itself.
    async fn mark_failed(&self, target: &UpgradeTarget, revision: &Revision, reason: &str) {
        let mirror = mirror_pod_name(&target.static_pod, &self.node);
        let key = ObjectRef::<Pod>::new(&mirror).within(&target.namespace);
        let deadline = Instant::now() + self.verify_timeout;
        loop {
            let changed = self.pod_changed.notified();
            let current = self
                .pods
                .get(&key)
                .filter(|p| pod_revision(p).as_ref() != Some(revision));
            if let Some(pod) = current {
                let value = format!("{revision}: {reason}");
                let patch = serde_json::json!({"metadata": {"annotations": {UPGRADE_FAILURE_ANNOTATION: value}}});
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &target.namespace);
                match api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(pod = %mirror, error = %e, "could not record the failure on the pod; retrying")
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(pod = %mirror, "the rolled-back mirror pod did not come back; the failure is recorded in events only");
                return;
            }
            let _ = tokio::time::timeout(left, changed).await;
        }
    }

    fn rendered(&self, target: &UpgradeTarget) -> Result<Rendered, String> {
        let cm_name = manifest_configmap_name(&target.static_pod);
        let key = ObjectRef::<ConfigMap>::new(&cm_name).within(&target.namespace);
        let cm = self.configmaps.get(&key).ok_or_else(|| {
            format!(
                "the manifest ConfigMap {}/{cm_name} does not exist",
                target.namespace
            )
        })?;
        let data: BTreeMap<String, String> = cm.data.clone().unwrap_or_default();
        let [(key, text)] = data.iter().collect::<Vec<_>>()[..] else {
            return Err(format!(
                "the manifest ConfigMap {}/{cm_name} must hold exactly one key, <manifest>.yaml",
                target.namespace
            ));
        };
        let base = key
            .strip_suffix(".yaml")
            .ok_or_else(|| format!("the manifest ConfigMap key {key:?} does not end in .yaml"))?;
        // Whatever the API server holds, only a plain file name reaches the disk.
        let name = ManifestName::new(base).map_err(|e| e.to_string())?;
        let pod = parse_manifest(text)
            .map_err(|e| format!("ConfigMap {}/{cm_name}: {e}", target.namespace))?;
        let revision = pod_revision(&pod).ok_or_else(|| {
            format!(
                "ConfigMap {}/{cm_name}: the manifest has no revision annotation",
                target.namespace
            )
        })?;
        Ok(Rendered {
            name,
            revision,
            text: text.clone(),
        })
    }

    fn record(&self, static_pod: &str, revision: String, state: &str, reason: Option<String>) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if let Ok(mut records) = self.records.lock() {
            // One record per StaticPod: its latest upgrade, keeping the swap time.
            let swap_ms = records
                .iter()
                .find(|r| r.static_pod == static_pod && r.revision == revision)
                .and_then(|r| r.swap_ms);
            records.retain(|r| r.static_pod != static_pod);
            records.push(UpgradeRecord {
                static_pod: static_pod.into(),
                revision,
                state: state.into(),
                reason,
                at,
                swap_ms,
            });
        }
        let outcome = match state {
            "Upgraded" => "upgraded",
            "RolledBack" => "rolled_back",
            "AlreadyCurrent" => "already_current",
            "Refused" => "refused",
            _ => return,
        };
        self.metrics.outcome(outcome);
    }

    async fn event(&self, target: &UpgradeTarget, type_: EventType, reason: &str, note: String) {
        let mirror = mirror_pod_name(&target.static_pod, &self.node);
        let key = ObjectRef::<Pod>::new(&mirror).within(&target.namespace);
        let Some(pod) = self.pods.get(&key) else {
            return;
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Upgrade".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &pod.object_ref(&())).await {
            tracing::warn!(error = %e, "could not publish an event");
        }
    }
}

impl NodeView for NodeAgent {
    fn node_name(&self) -> &str {
        &self.node
    }
    async fn pods(&self) -> Result<Vec<Pod>, String> {
        Ok(self.pods.state().iter().map(|p| (**p).clone()).collect())
    }
    async fn pod(&self, ns: &str, name: &str) -> Result<Option<Pod>, String> {
        if let Some(pod) = self.pods.get(&ObjectRef::new(name).within(ns)) {
            return Ok(Some((*pod).clone()));
        }
        // Not on this node: ask the API server, to tell "elsewhere" (403) from "nowhere" (404).
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())
    }
    async fn manifest_exists(&self, ns: &str, static_pod: &str) -> Result<bool, String> {
        let key = ObjectRef::<ConfigMap>::new(&manifest_configmap_name(static_pod)).within(ns);
        Ok(self.configmaps.get(&key).is_some())
    }
    async fn start_upgrade(&self, target: UpgradeTarget) -> Result<(), String> {
        self.rendered(&target)?;
        self.enqueue(target, None);
        Ok(())
    }
    fn upgrades(&self) -> serde_json::Value {
        let records = self.records.lock().map(|r| r.clone()).unwrap_or_default();
        serde_json::json!({ "node": self.node, "upgrades": records })
    }
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn failed_revision(pod: &Pod) -> Option<Revision> {
    annotation(pod, UPGRADE_FAILURE_ANNOTATION)?
        .split(':')
        .next()
        .and_then(Revision::parse)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn why_not_ready(pod: &Pod) -> String {
    let waiting = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            Some(format!(
                "container {} is waiting: {}",
                c.name,
                w.reason.clone().unwrap_or_default()
            ))
        });
    waiting.unwrap_or_else(|| "the pod is not Ready".into())
}
