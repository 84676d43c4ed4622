//! The reconciler: reads the caches, asks the planner, applies its actions, keeps
//! the manifest ConfigMap and writes status. All decisions are the planner's.
//!
//! RBAC: staticpods `get, list, watch`, staticpods/status `patch`; configmaps
//! `get, list, watch, create, update`; pods `get, list, watch, patch`,
//! pods/status `patch`; nodes `get, list, watch`; events.k8s.io events
//! `create, patch`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
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

use crate::assess::{InFlight, Target};
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
    /// Publishes Events on StaticPods.
    pub recorder: Recorder,
    /// Counters, durations and per-state node gauges.
    pub metrics: Arc<Metrics>,
    /// The node states each StaticPod was last seen in (`ns/name` → revision and
    /// node → state word), so Events are published for changes only. Empty after a
    /// restart: the first look at a StaticPod publishes nothing but failures.
    pub seen: Mutex<HashMap<String, Seen>>,
}

/// A StaticPod's target revision and its nodes' states, as last planned.
pub type Seen = (Revision, BTreeMap<String, NodeState>);

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

    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let cm_name = manifest_configmap_name(&name);
    let existing = configmaps
        .get_opt(&cm_name)
        .await
        .map_err(kube(format!("read ConfigMap {ns}/{cm_name}")))?;
    let mut in_flight = existing
        .as_ref()
        .and_then(InFlight::from_configmap)
        .unwrap_or_else(|| InFlight::new(revision));
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let nodes = ctx.nodes.state();
    let facts = target.node_facts(
        nodes.iter().map(|n| n.as_ref()),
        |pod| {
            ctx.pods
                .get(&ObjectRef::new(pod).within(&ns))
                .map(|p| (*p).clone())
        },
        &mut in_flight,
        now,
    );
    let plan = target.plan(&facts);

    // Write-ahead: the record of asked nodes is stored before they are asked.
    for step in &plan.actions {
        if let Step::Request { node, .. } = step {
            in_flight.nodes.insert(node.clone(), now);
        }
    }
    ensure_configmap(&configmaps, sp, existing, &target, &in_flight).await?;

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

async fn publish(ctx: &Context, sp: &StaticPod, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Rollout".into(),
        secondary: None,
    };
    // An Event is a courtesy: losing one must not fail the rollout.
    if let Err(e) = ctx.recorder.publish(&event, &sp.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not publish an event");
    }
}

/// Retries a failed reconcile after a short pause.
pub fn error_policy(sp: Arc<StaticPod>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(static_pod = %sp.name_any(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Keeps the ConfigMap equal to the rendered target: exactly one key, owned by the
/// StaticPod (garbage-collected with it), repaired if someone edits or empties it,
/// and carrying the record of nodes asked to upgrade.
async fn ensure_configmap(
    api: &Api<ConfigMap>,
    sp: &StaticPod,
    existing: Option<ConfigMap>,
    target: &Target,
    in_flight: &InFlight,
) -> Result<(), Error> {
    let name = manifest_configmap_name(&sp.name_any());
    let ns = sp.namespace().unwrap_or_else(|| "default".into());
    let key = format!("{}.yaml", target.static_pod.spec.static_pod_manifest);
    let data = BTreeMap::from([(key, target.manifest.yaml.clone())]);
    let labels = BTreeMap::from([(STATIC_POD_LABEL.to_owned(), sp.name_any())]);
    let record = in_flight.to_annotation();
    let owner = sp.controller_owner_ref(&());
    match existing {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(UPGRADING_ANNOTATION.to_owned(), record)])),
                    owner_references: owner.map(|o| vec![o]),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &cm)
                .await
                .map_err(kube(format!("create ConfigMap {ns}/{name}")))?;
        }
        Some(mut cm) => {
            let labelled = cm
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(STATIC_POD_LABEL))
                == Some(&sp.name_any());
            let owned =
                cm.metadata.owner_references.as_ref().is_some_and(|refs| {
                    refs.iter().any(|r| Some(&r.uid) == sp.meta().uid.as_ref())
                });
            let recorded = cm
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(UPGRADING_ANNOTATION))
                == Some(&record);
            if cm.data.as_ref() != Some(&data)
                || cm.binary_data.is_some()
                || !labelled
                || !owned
                || !recorded
            {
                cm.data = Some(data);
                cm.binary_data = None;
                cm.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .extend(labels);
                cm.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(UPGRADING_ANNOTATION.to_owned(), record);
                if !owned && let Some(owner) = owner {
                    cm.metadata
                        .owner_references
                        .get_or_insert_with(Default::default)
                        .push(owner);
                }
                // `replace` carries the resourceVersion read above: a concurrent
                // writer makes this fail with a conflict and the reconcile retries.
                api.replace(&name, &PostParams::default(), &cm)
                    .await
                    .map_err(kube(format!("repair ConfigMap {ns}/{name}")))?;
            }
        }
    }
    Ok(())
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
