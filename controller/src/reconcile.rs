//! The reconciler: reads the caches, asks the planner, applies its actions, keeps
//! the manifest ConfigMap and writes status. All decisions are the planner's.
//!
//! RBAC: staticpods `get, list, watch`, staticpods/status `patch`; configmaps
//! `get, list, watch, create, patch, update`; pods `get, list, watch, patch`,
//! pods/status `patch`; nodes `get, list, watch`; events.k8s.io events
//! `create, patch`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use staticpod_api::conventions::{
    POD_NEED_UPGRADE, STATIC_POD_LABEL, UPGRADE_REQUEST_ANNOTATION, UPGRADING_ANNOTATION,
    manifest_configmap_name, mirror_pod_name,
};
use staticpod_api::{Revision, StaticPod, StaticPodStatus};

use crate::assess::{Asked, InFlight, Target};
use crate::metrics::Metrics;
use crate::planner::{self, Action as Step, NodeState};

/// Why a reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The StaticPod cannot be rendered or planned (the webhook should have refused it).
    #[error("StaticPod {0}")]
    Invalid(String),
}

fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// All pods (mirror pods are found by name).
    pub pods: Store<Pod>,
    /// All nodes.
    pub nodes: Store<Node>,
    /// The manifest ConfigMaps (labelled with the StaticPod's name).
    pub configmaps: Store<ConfigMap>,
    /// Publishes Events on StaticPods.
    pub recorder: Recorder,
    /// Per StaticPod (`ns/name`): the nodes asked to upgrade, and the record last
    /// written to its ConfigMap. Read from the ConfigMap the first time a
    /// StaticPod is seen (after a restart), kept here after that, so a reconcile
    /// with nothing to do makes no API call.
    pub records: Mutex<HashMap<String, Record>>,
    /// Counters, durations and per-state node gauges.
    pub metrics: Arc<Metrics>,
    /// The node states each StaticPod was last seen in (`ns/name` → revision and
    /// node → state word), so Events are published for changes only. Empty after a
    /// restart: the first look at a StaticPod publishes nothing but failures.
    pub seen: Mutex<HashMap<String, Seen>>,
}

/// A StaticPod's target revision and its nodes' states, as last planned.
pub type Seen = (Revision, BTreeMap<String, NodeState>);

/// The nodes asked to upgrade, as known and as last written.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// What the controller knows.
    pub in_flight: InFlight,
    /// The annotation value it last wrote (`None`: not written by this process).
    pub written: Option<String>,
}

/// Reconciles one StaticPod.
pub async fn reconcile(sp: Arc<StaticPod>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&sp, &ctx).await;
    ctx.metrics.reconciled(
        if result.is_ok() { "success" } else { "error" },
        started.elapsed().as_secs_f64(),
    );
    result
}

async fn reconcile_inner(sp: &StaticPod, ctx: &Context) -> Result<Action, Error> {
    let name = sp.name_any();
    let ns = sp.namespace().unwrap_or_else(|| "default".into());
    let target = Target::of(sp).map_err(Error::Invalid)?;
    let revision = &target.manifest.revision;

    // The uid too: a StaticPod deleted and created again starts afresh.
    let id = format!(
        "{ns}/{name}/{}",
        sp.meta().uid.as_deref().unwrap_or_default()
    );
    let cm_name = manifest_configmap_name(&name);
    let cached = ctx
        .configmaps
        .get(&ObjectRef::new(&cm_name).within(&ns))
        .map(|cm| (*cm).clone());
    let mut record = ctx
        .records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .cloned()
        .unwrap_or_else(|| Record {
            in_flight: cached
                .as_ref()
                .and_then(InFlight::from_configmap)
                .unwrap_or_else(|| InFlight::new(revision)),
            written: None,
        });
    let in_flight = &mut record.in_flight;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let nodes = ctx.nodes.state();
    let facts = target.node_facts(
        nodes.iter().map(|n| n.as_ref()),
        |pod| {
            ctx.pods
                .get(&ObjectRef::new(pod).within(&ns))
                .map(|p| (*p).clone())
        },
        in_flight,
        now,
    );
    let plan = target.plan(&facts);

    // Write-ahead: the record of asked nodes is stored before they are asked.
    for step in &plan.actions {
        if let Step::Request { node, .. } = step {
            let asked = ctx
                .pods
                .get(&ObjectRef::new(&mirror_pod_name(&name, node)).within(&ns))
                .and_then(|p| p.metadata.uid.clone());
            in_flight.nodes.insert(node.clone(), Asked::new(now, asked));
        }
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    record.written = ensure_configmap(
        &configmaps,
        sp,
        cached,
        &target,
        &record.in_flight,
        &record.written,
    )
    .await?;
    ctx.records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, record);

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for step in &plan.actions {
        match step {
            Step::Request { node, revision } => {
                let pod = mirror_pod_name(&name, node);
                let patch = json!({"metadata": {"annotations": {UPGRADE_REQUEST_ANNOTATION: revision.to_string()}}});
                pods.patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(kube(format!(
                        "request revision {revision} on pod {ns}/{pod}"
                    )))?;
                ctx.metrics.requested();
                tracing::info!(static_pod = %format!("{ns}/{name}"), %node, %revision, "upgrade requested");
                publish(
                    ctx,
                    sp,
                    EventType::Normal,
                    "UpgradeRequested",
                    format!("asked node {node} to install revision {revision}"),
                )
                .await;
            }
            Step::MarkNeedUpgrade { node, need } => {
                let pod = mirror_pod_name(&name, node);
                // Strategic merge keys pod conditions by type: kubelet's stay untouched.
                let condition = json!({
                    "type": POD_NEED_UPGRADE,
                    "status": if *need { "True" } else { "False" },
                    "reason": if *need { "NewRevisionAvailable" } else { "RunningTargetRevision" },
                    "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
                });
                let patch = json!({"status": {"conditions": [condition]}});
                pods.patch_status(&pod, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                    .map_err(kube(format!("mark {POD_NEED_UPGRADE} on pod {ns}/{pod}")))?;
            }
        }
    }

    publish_changes(ctx, sp, &ns, revision, &plan).await;
    ctx.metrics.nodes_by_state(&ns, &name, &plan.nodes);
    write_status(&ctx.client, sp, &ns, &plan, &revision.to_string()).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Events for nodes that finished or failed since the last look, and for a
/// rollout that completed.
async fn publish_changes(
    ctx: &Context,
    sp: &StaticPod,
    ns: &str,
    revision: &Revision,
    plan: &planner::Plan,
) {
    let id = format!("{ns}/{}", sp.name_any());
    let current: BTreeMap<String, NodeState> = plan.nodes.iter().cloned().collect();
    let previous = ctx
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, (revision.clone(), current.clone()));
    let before = |node: &str| match &previous {
        Some((r, states)) if r == revision => states.get(node).cloned(),
        _ => None,
    };
    let first_look = previous.is_none();
    for (node, state) in &current {
        let was = before(node);
        if was.as_ref() == Some(state) {
            continue;
        }
        match state {
            NodeState::Upgraded if !first_look && was.is_some() => {
                publish(
                    ctx,
                    sp,
                    EventType::Normal,
                    "NodeUpgraded",
                    format!("node {node} runs revision {revision}"),
                )
                .await;
            }
            NodeState::Failed(reason) => {
                publish(
                    ctx,
                    sp,
                    EventType::Warning,
                    "UpgradeFailed",
                    format!(
                        "revision {revision} failed on node {node} and was rolled back: {reason}"
                    ),
                )
                .await;
            }
            _ => {}
        }
    }
    let complete = |states: &BTreeMap<String, NodeState>| {
        !states.is_empty() && states.values().all(|s| *s == NodeState::Upgraded)
    };
    let was_complete = previous
        .as_ref()
        .is_some_and(|(r, states)| r == revision && complete(states));
    if !first_look && complete(&current) && !was_complete {
        publish(
            ctx,
            sp,
            EventType::Normal,
            "RolloutComplete",
            format!("all {} nodes run revision {revision}", current.len()),
        )
        .await;
    }
}

/// Publishes an Event in the background: it is a courtesy, so neither its
/// latency nor its loss may hold up or fail the rollout.
async fn publish(ctx: &Context, sp: &StaticPod, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Rollout".into(),
        secondary: None,
    };
    let recorder = ctx.recorder.clone();
    let reference = sp.object_ref(&());
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason = %event.reason, "could not publish an event");
        }
    });
}

/// Retries a failed reconcile after a short pause.
pub fn error_policy(sp: Arc<StaticPod>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(static_pod = %sp.name_any(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Keeps the ConfigMap equal to the rendered target: exactly one key, owned by the
/// StaticPod (garbage-collected with it), repaired if someone edits or empties it,
/// and carrying the record of nodes asked to upgrade. `cached` is the watch cache's
/// copy and `written` the record this process last wrote; when both agree with
/// the target nothing is sent. Returns the record now written.
async fn ensure_configmap(
    api: &Api<ConfigMap>,
    sp: &StaticPod,
    cached: Option<ConfigMap>,
    target: &Target,
    in_flight: &InFlight,
    written: &Option<String>,
) -> Result<Option<String>, Error> {
    let name = manifest_configmap_name(&sp.name_any());
    let ns = sp.namespace().unwrap_or_else(|| "default".into());
    let key = format!("{}.yaml", target.static_pod.spec.static_pod_manifest);
    let data = BTreeMap::from([(key, target.manifest.yaml.clone())]);
    let record = in_flight.to_annotation();
    let Some(owner) = sp.controller_owner_ref(&()) else {
        return Err(Error::Invalid(format!(
            "{ns}/{}: no uid to own its ConfigMap",
            sp.name_any()
        )));
    };
    let labelled = |cm: &ConfigMap| {
        cm.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(STATIC_POD_LABEL))
            == Some(&sp.name_any())
    };
    let owned = |cm: &ConfigMap| {
        cm.metadata
            .owner_references
            .as_ref()
            .is_some_and(|refs| refs.iter().any(|r| r.uid == owner.uid))
    };
    let current = cached.as_ref().is_some_and(|cm| {
        cm.data.as_ref() == Some(&data) && labelled(cm) && owned(cm) && cm.binary_data.is_none()
    });
    if current && written.as_ref() == Some(&record) {
        return Ok(Some(record));
    }
    // Keys someone else added are not ours under server-side apply, so applying
    // would leave them: replace the whole object instead (rare: a hand edit).
    let foreign_keys = cached.as_ref().is_some_and(|cm| {
        cm.binary_data.is_some()
            || cm
                .data
                .as_ref()
                .is_some_and(|d| d.keys().any(|k| !data.contains_key(k)))
    });
    if foreign_keys {
        let mut cm = api
            .get(&name)
            .await
            .map_err(kube(format!("read ConfigMap {ns}/{name}")))?;
        cm.data = Some(data.clone());
        cm.binary_data = None;
        // `replace` carries the resourceVersion just read: a concurrent writer
        // makes it fail with a conflict and the reconcile retries.
        api.replace(&name, &PostParams::default(), &cm)
            .await
            .map_err(kube(format!("repair ConfigMap {ns}/{name}")))?;
    }
    let desired = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {STATIC_POD_LABEL: sp.name_any()},
            "annotations": {UPGRADING_ANNOTATION: record},
            "ownerReferences": [owner],
        },
        "data": data,
    });
    // Server-side apply: creates or updates without a read, and never conflicts
    // with the watch cache lagging behind this process's own last write.
    api.patch(
        &name,
        &PatchParams::apply("staticpod-controller").force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(kube(format!("apply ConfigMap {ns}/{name}")))?;
    Ok(Some(record))
}

async fn write_status(
    client: &Client,
    sp: &StaticPod,
    ns: &str,
    plan: &planner::Plan,
    revision: &str,
) -> Result<(), Error> {
    let old = sp.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let conditions: Vec<Condition> = plan
        .conditions
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" }.to_owned();
            let previous = old.conditions.iter().find(|o| o.type_ == c.type_);
            Condition {
                type_: c.type_.into(),
                last_transition_time: previous
                    .filter(|p| p.status == status)
                    .map(|p| p.last_transition_time.clone())
                    .unwrap_or_else(|| now.clone()),
                status,
                reason: c.reason.into(),
                message: c.message.clone(),
                observed_generation: sp.meta().generation,
            }
        })
        .collect();
    let status = StaticPodStatus {
        observed_generation: sp.meta().generation,
        total_number: plan.total as i32,
        ready_number: plan.ready as i32,
        upgraded_number: plan.upgraded as i32,
        target_revision: Some(revision.to_owned()),
        conditions,
    };
    if status == old {
        return Ok(());
    }
    let api: Api<StaticPod> = Api::namespaced(client.clone(), ns);
    let patch = json!({"status": status});
    api.patch_status(
        &sp.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube(format!(
        "write status of StaticPod {ns}/{}",
        sp.name_any()
    )))?;
    Ok(())
}
