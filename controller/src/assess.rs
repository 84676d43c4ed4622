//! One way to judge a StaticPod against the cluster, shared by the controller and
//! the kubectl plugin: its target (defaulted spec, rendered manifest, mode, window)
//! and the per-node facts the planner reads. Pure: callers bring the objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, PodSpec};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use staticpod_api::conventions::{UPGRADING_ANNOTATION, mirror_pod_name};
use staticpod_api::{
    Manifest, MaxUnavailable, Revision, StaticPod, StrategyType, default_static_pod,
    render_manifest,
};

use crate::facts::{node_ready, pod_facts};
use crate::planner::{self, NodeFacts, Plan, PodFacts};

/// What a StaticPod asks for, once defaulted and rendered.
#[derive(Clone, Debug)]
pub struct Target {
    /// The StaticPod with every default applied.
    pub static_pod: StaticPod,
    /// The manifest every node should run, and its revision.
    pub manifest: Manifest,
    /// `auto` or `ota`.
    pub mode: StrategyType,
    /// The unresolved `maxUnavailable` (10% when unset).
    pub max_unavailable: MaxUnavailable,
    /// The defaulted pod template spec (what adoption compares against).
    pub template: PodSpec,
}

impl Target {
    /// Defaults and renders `sp`. The error names the field; the webhook refuses
    /// such objects, so this only happens when it was bypassed.
    pub fn of(sp: &StaticPod) -> Result<Self, String> {
        let who = format!(
            "StaticPod {}/{}",
            sp.namespace().unwrap_or_else(|| "default".into()),
            sp.name_any()
        );
        let mut defaulted = sp.clone();
        default_static_pod(&mut defaulted);
        let manifest = render_manifest(&defaulted).map_err(|e| format!("{who}: {e}"))?;
        let mode = defaulted.strategy().ok_or_else(|| {
            format!("{who}: spec.upgradeStrategy.type: supported values are \"auto\" and \"ota\"")
        })?;
        let max_unavailable = defaulted
            .spec
            .upgrade_strategy
            .max_unavailable
            .as_ref()
            .map(MaxUnavailable::parse)
            .transpose()
            .map_err(|rule| format!("{who}: spec.upgradeStrategy.maxUnavailable {rule}"))?
            .unwrap_or(MaxUnavailable::Percent(10));
        let template = defaulted.spec.template.spec.clone().unwrap_or_default();
        Ok(Self {
            static_pod: defaulted,
            manifest,
            mode,
            max_unavailable,
            template,
        })
    }

    /// The planner's view of every node. `mirror_pod(name)` looks a pod up by name
    /// in the StaticPod's namespace. `in_flight` holds nodes asked to upgrade to
    /// this target: such a node whose mirror pod is momentarily gone (the kubelet
    /// deletes it before creating the replacement), or back without the request
    /// (rolled back, failure not yet recorded), still counts as upgrading;
    /// nodes that settled (on the target, or failed) are removed from it, and so
    /// is a node whose pod stayed away longer than [`IN_FLIGHT_EXPIRY_SECONDS`]
    /// (its static pod was removed: it left the rollout's scope). `now` is unix
    /// seconds.
    pub fn node_facts<'a>(
        &self,
        nodes: impl IntoIterator<Item = &'a Node>,
        mirror_pod: impl Fn(&str) -> Option<Pod>,
        in_flight: &mut InFlight,
        now: i64,
    ) -> Vec<NodeFacts> {
        if in_flight.revision != self.manifest.revision.to_string() {
            *in_flight = InFlight::new(&self.manifest.revision);
        }
        let name = self.static_pod.name_any();
        let target = &self.manifest.revision;
        nodes
            .into_iter()
            .map(|node| {
                let node_name = node.name_any();
                let object = mirror_pod(&mirror_pod_name(&name, &node_name)).filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name.as_str())
                });
                let uid = object.as_ref().and_then(|p| p.metadata.uid.clone());
                let mut pod = object.map(|p| pod_facts(&p, &self.template));
                match &pod {
                    // Settled: Ready on the target (the agent has committed), or
                    // failed there. A target pod that is not Ready yet may still be
                    // rolled back, and its pod vanish again.
                    Some(facts)
                        if (facts.revision.as_ref() == Some(target) && facts.ready)
                            || facts.failed.as_ref().is_some_and(|f| &f.revision == target) =>
                    {
                        in_flight.nodes.remove(&node_name);
                    }
                    // Asked, yet the pod carries no request. A different pod than the
                    // one asked is a new mirror pod (the agent rolled back and is about
                    // to record why, or the kubelet replaced it): asking again would
                    // retry a failed revision, so wait, unless the ask is too old to
                    // still be in hand. The very pod that was asked never got the
                    // request (the controller stopped between recording and asking):
                    // ask again.
                    Some(facts) if facts.requested.as_ref() != Some(target) => {
                        match in_flight.nodes.get(&node_name) {
                            Some(asked)
                                if now - asked.at < IN_FLIGHT_EXPIRY_SECONDS
                                    && asked.pod != uid =>
                            {
                                if let Some(facts) = pod.as_mut() {
                                    facts.requested = Some(target.clone());
                                }
                            }
                            Some(_) => {
                                in_flight.nodes.remove(&node_name);
                            }
                            None => {}
                        }
                    }
                    Some(_) => {}
                    None if in_flight
                        .nodes
                        .get(&node_name)
                        .is_some_and(|asked| now - asked.at < IN_FLIGHT_EXPIRY_SECONDS) =>
                    {
                        pod = Some(PodFacts {
                            ready: false,
                            requested: Some(target.clone()),
                            ..Default::default()
                        });
                    }
                    None => {
                        in_flight.nodes.remove(&node_name);
                    }
                }
                NodeFacts {
                    node: node_name,
                    node_ready: node_ready(node),
                    pod,
                }
            })
            .collect()
    }

    /// Plans this target over `facts`.
    pub fn plan(&self, facts: &[NodeFacts]) -> Plan {
        planner::plan(
            self.mode,
            self.max_unavailable,
            &self.manifest.revision,
            facts,
        )
    }
}

/// How long a node asked to upgrade may be without a mirror pod before it no longer
/// counts as upgrading. The kubelet replaces a static pod within seconds and the
/// agent rolls back within its verification deadline (5 minutes by default).
pub const IN_FLIGHT_EXPIRY_SECONDS: i64 = 900;

/// The nodes asked to upgrade to one revision. Kept in the manifest ConfigMap's
/// [`UPGRADING_ANNOTATION`] so a restarted controller (or the plugin) knows them too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// The revision the nodes were asked to install.
    pub revision: String,
    /// Node name → the ask.
    pub nodes: BTreeMap<String, Asked>,
}

/// One ask: recorded before the mirror pod is annotated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asked {
    /// When (unix seconds).
    pub at: i64,
    /// The uid of the mirror pod that was asked: if that same pod shows no request
    /// later, the request never landed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

impl Asked {
    /// An ask of pod `pod` at `at`.
    pub fn new(at: i64, pod: Option<String>) -> Self {
        Self { at, pod }
    }
}

impl InFlight {
    /// An empty record for `revision`.
    pub fn new(revision: &Revision) -> Self {
        Self {
            revision: revision.to_string(),
            nodes: BTreeMap::new(),
        }
    }

    /// The record in `cm`, if there is a readable one (anything else is treated as
    /// empty: the worst case is one node upgraded early, never a crash).
    pub fn from_configmap(cm: &ConfigMap) -> Option<Self> {
        let text = cm
            .metadata
            .annotations
            .as_ref()?
            .get(UPGRADING_ANNOTATION)?;
        serde_json::from_str(text).ok()
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use staticpod_api::testing::static_pod;

    fn node(name: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// node-1's mirror pod `uid` running the old image nginx:1.19.1 (installed by
    /// hand: no revision, no request).
    fn old_mirror_pod(target: &Target, uid: &str) -> Pod {
        let mut pod = target.manifest.pod.clone();
        pod.metadata.name = Some("nginx-node-1".into());
        pod.metadata.uid = Some(uid.into());
        pod.metadata.annotations = None;
        let spec = pod.spec.get_or_insert_with(Default::default);
        spec.node_name = Some("node-1".into());
        for container in &mut spec.containers {
            container.image = Some("nginx:1.19.1".into());
        }
        pod
    }

    #[test]
    fn a_node_asked_to_upgrade_keeps_its_slot_while_its_pod_is_replaced() {
        let target = Target::of(&static_pod("nginx", "nginx:1.19.2")).expect("target");
        let nodes = [node("node-1"), node("node-2")];
        let mut in_flight = InFlight::new(&target.manifest.revision);
        in_flight
            .nodes
            .insert("node-1".into(), Asked::new(1_000, Some("asked-pod".into())));
        let facts = target.node_facts(&nodes, |_| None, &mut in_flight, 1_010);
        let node1 = facts[0].pod.as_ref().expect("node-1 still in scope");
        assert_eq!(node1.requested.as_ref(), Some(&target.manifest.revision));
        assert!(facts[1].pod.is_none(), "node-2 was never asked");

        // Long gone: the static pod was removed, the node leaves the rollout.
        let facts = target.node_facts(
            &nodes,
            |_| None,
            &mut in_flight,
            1_000 + IN_FLIGHT_EXPIRY_SECONDS,
        );
        assert!(facts[0].pod.is_none());
        assert!(in_flight.nodes.is_empty());
    }

    #[test]
    fn a_node_whose_pod_came_back_without_the_request_is_not_asked_again() {
        let target = Target::of(&static_pod("nginx", "nginx:1.19.2")).expect("target");
        let old_pod = old_mirror_pod(&target, "pod-after-rollback");
        let nodes = [node("node-1")];
        let mut in_flight = InFlight::new(&target.manifest.revision);
        in_flight
            .nodes
            .insert("node-1".into(), Asked::new(1_000, Some("asked-pod".into())));
        let lookup = |name: &str| (name == "nginx-node-1").then(|| old_pod.clone());
        let facts = target.node_facts(&nodes, lookup, &mut in_flight, 1_020);
        let plan = target.plan(&facts);
        assert_eq!(plan.nodes[0].1, crate::planner::NodeState::Upgrading);
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);

        // Too long without news: asked again.
        let facts = target.node_facts(
            &nodes,
            lookup,
            &mut in_flight,
            1_000 + IN_FLIGHT_EXPIRY_SECONDS,
        );
        let plan = target.plan(&facts);
        assert_eq!(plan.nodes[0].1, crate::planner::NodeState::Pending);
        assert_eq!(plan.actions.len(), 1);
    }

    #[test]
    fn the_pod_that_was_asked_but_shows_no_request_is_asked_again() {
        // The controller recorded the ask, then died before annotating the pod.
        let target = Target::of(&static_pod("nginx", "nginx:1.19.2")).expect("target");
        let old_pod = old_mirror_pod(&target, "asked-pod");
        let mut in_flight = InFlight::new(&target.manifest.revision);
        in_flight
            .nodes
            .insert("node-1".into(), Asked::new(1_000, Some("asked-pod".into())));
        let lookup = |name: &str| (name == "nginx-node-1").then(|| old_pod.clone());
        let facts = target.node_facts(&[node("node-1")], lookup, &mut in_flight, 1_005);
        let plan = target.plan(&facts);
        assert_eq!(plan.nodes[0].1, crate::planner::NodeState::Pending);
        assert_eq!(plan.actions.len(), 1, "{:?}", plan.actions);
    }

    #[test]
    fn a_node_stays_asked_until_its_new_pod_is_ready() {
        let target = Target::of(&static_pod("nginx", "nginx:1.19.2")).expect("target");
        let mut new_pod = target.manifest.pod.clone();
        new_pod.metadata.name = Some("nginx-node-1".into());
        new_pod.spec.get_or_insert_with(Default::default).node_name = Some("node-1".into());
        let nodes = [node("node-1")];
        let mut in_flight = InFlight::new(&target.manifest.revision);
        in_flight
            .nodes
            .insert("node-1".into(), Asked::new(1_000, Some("asked-pod".into())));
        // On the target but not Ready (e.g. its image cannot be pulled): the agent
        // may still roll back, so the node stays asked ...
        let lookup = |name: &str| (name == "nginx-node-1").then(|| new_pod.clone());
        target.node_facts(&nodes, lookup, &mut in_flight, 1_010);
        assert!(in_flight.nodes.contains_key("node-1"));
        // ... and while the rollback replaces the pod, it still holds its slot.
        let facts = target.node_facts(&nodes, |_| None, &mut in_flight, 1_020);
        assert!(facts[0].pod.is_some());
    }

    #[test]
    fn a_record_for_another_revision_is_dropped() {
        let target = Target::of(&static_pod("nginx", "nginx:1.19.2")).expect("target");
        let old = Target::of(&static_pod("nginx", "nginx:1.19.1")).expect("old");
        let mut in_flight = InFlight::new(&old.manifest.revision);
        in_flight
            .nodes
            .insert("node-1".into(), Asked::new(1_000, Some("asked-pod".into())));
        let facts = target.node_facts(&[node("node-1")], |_| None, &mut in_flight, 1_001);
        assert!(facts[0].pod.is_none());
        assert_eq!(in_flight, InFlight::new(&target.manifest.revision));
    }

    #[test]
    fn the_record_round_trips_through_the_configmap_and_garbage_is_ignored() {
        let target = Target::of(&static_pod("nginx", "nginx:1.19.2")).expect("target");
        let mut record = InFlight::new(&target.manifest.revision);
        record
            .nodes
            .insert("node-3".into(), Asked::new(42, Some("uid-3".into())));
        let mut cm = ConfigMap::default();
        cm.metadata.annotations = Some(BTreeMap::from([(
            UPGRADING_ANNOTATION.to_owned(),
            record.to_annotation(),
        )]));
        assert_eq!(InFlight::from_configmap(&cm), Some(record));
        cm.metadata.annotations = Some(BTreeMap::from([(
            UPGRADING_ANNOTATION.to_owned(),
            "{not json".to_owned(),
        )]));
        assert_eq!(InFlight::from_configmap(&cm), None);
    }
}
