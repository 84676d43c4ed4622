//! The reconciler: reads the caches, asks the planner, applies its actions, keeps
//! the manifest ConfigMap and writes status. All decisions are the planner's.
//!
//! RBAC: staticpods `get, list, watch`, staticpods/status `patch`; configmaps
//! `get, list, watch, create, update`; pods `get, list, watch, patch`,
//! pods/status `patch`; nodes `get, list, watch`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use staticpod_api::conventions::{
    POD_NEED_UPGRADE, STATIC_POD_LABEL, UPGRADE_REQUEST_ANNOTATION, manifest_configmap_name,
    mirror_pod_name,
};
use staticpod_api::{
    MaxUnavailable, Revision, StaticPod, StaticPodStatus, default_static_pod, render_manifest,
};

use crate::facts::{node_ready, pod_facts};
use crate::planner::{self, Action as Step, NodeFacts, PodFacts};

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
    /// Nodes asked to upgrade, per StaticPod (`ns/name`) and target revision. While
    /// a node's agent swaps the manifest the kubelet deletes the old mirror pod
    /// before it creates the new one; without this memory such a node would briefly
    /// look out of scope and free a slot in the window that is still taken.
    pub in_flight: Mutex<HashMap<String, (Revision, HashSet<String>)>>,
}

/// Reconciles one StaticPod.
pub async fn reconcile(sp: Arc<StaticPod>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = sp.name_any();
    let ns = sp.namespace().unwrap_or_else(|| "default".into());
    let mut defaulted = (*sp).clone();
    default_static_pod(&mut defaulted);
    let manifest =
        render_manifest(&defaulted).map_err(|e| Error::Invalid(format!("{ns}/{name}: {e}")))?;
    let mode = defaulted.strategy().ok_or_else(|| {
        Error::Invalid(format!(
            "{ns}/{name}: unsupported spec.upgradeStrategy.type"
        ))
    })?;
    let max = defaulted
        .spec
        .upgrade_strategy
        .max_unavailable
        .as_ref()
        .map(MaxUnavailable::parse)
        .transpose()
        .map_err(|rule| {
            Error::Invalid(format!(
                "{ns}/{name}: spec.upgradeStrategy.maxUnavailable {rule}"
            ))
        })?
        .unwrap_or(MaxUnavailable::Percent(10));

    ensure_configmap(
        &ctx.client,
        &sp,
        &ns,
        &defaulted.spec.static_pod_manifest,
        &manifest.yaml,
    )
    .await?;

    let template = defaulted.spec.template.spec.clone().unwrap_or_default();
    let id = format!("{ns}/{name}");
    let target = &manifest.revision;
    let mut in_flight = {
        let all = ctx.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        match all.get(&id) {
            Some((revision, nodes)) if revision == target => nodes.clone(),
            _ => HashSet::new(),
        }
    };
    let facts: Vec<NodeFacts> = ctx
        .nodes
        .state()
        .iter()
        .map(|node| {
            let node_name = node.name_any();
            let key = ObjectRef::<Pod>::new(&mirror_pod_name(&name, &node_name)).within(&ns);
            let mut pod = ctx
                .pods
                .get(&key)
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name.as_str())
                })
                .map(|p| pod_facts(&p, &template));
            match &pod {
                // Settled: on the target, or failed there.
                Some(facts)
                    if facts.revision.as_ref() == Some(target) || facts.failed.is_some() =>
                {
                    in_flight.remove(&node_name);
                }
                Some(_) => {}
                // Being replaced: still in scope, still upgrading.
                None if in_flight.contains(&node_name) => {
                    pod = Some(PodFacts {
                        ready: false,
                        requested: Some(target.clone()),
                        ..Default::default()
                    });
                }
                None => {}
            }
            NodeFacts {
                node: node_name,
                node_ready: node_ready(node),
                pod,
            }
        })
        .collect();
    let plan = planner::plan(mode, max, &manifest.revision, &facts);

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
                in_flight.insert(node.clone());
                tracing::info!(static_pod = %format!("{ns}/{name}"), %node, %revision, "upgrade requested");
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

    ctx.in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, (target.clone(), in_flight));
    write_status(&ctx.client, &sp, &ns, &plan, &manifest.revision.to_string()).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Retries a failed reconcile after a short pause.
pub fn error_policy(sp: Arc<StaticPod>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(static_pod = %sp.name_any(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Keeps the ConfigMap equal to the rendered target: exactly one key, owned by the
/// StaticPod (garbage-collected with it), repaired if someone edits or empties it.
async fn ensure_configmap(
    client: &Client,
    sp: &StaticPod,
    ns: &str,
    manifest: &str,
    yaml: &str,
) -> Result<(), Error> {
    let name = manifest_configmap_name(&sp.name_any());
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let data = BTreeMap::from([(format!("{manifest}.yaml"), yaml.to_owned())]);
    let labels = BTreeMap::from([(STATIC_POD_LABEL.to_owned(), sp.name_any())]);
    let owner = sp.controller_owner_ref(&());
    let existing = api
        .get_opt(&name)
        .await
        .map_err(kube(format!("read ConfigMap {ns}/{name}")))?;
    match existing {
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.into()),
                    labels: Some(labels),
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
            if cm.data.as_ref() != Some(&data) || cm.binary_data.is_some() || !labelled || !owned {
                cm.data = Some(data);
                cm.binary_data = None;
                cm.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .extend(labels);
                if !owned && let Some(owner) = owner {
                    cm.metadata
                        .owner_references
                        .get_or_insert_with(Default::default)
                        .push(owner);
                }
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
