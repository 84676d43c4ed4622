//! What the plugin shows about a StaticPod, built from cluster objects with the
//! controller's own assessment ([`Target`], [`Target::node_facts`], [`Target::plan`]),
//! so the plugin never judges a node differently from the controller. Pure: the
//! caller brings the objects. The structs here are also the `-o json|yaml` output,
//! so their field names are a stable interface.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::ResourceExt;
use serde::Serialize;
use staticpod_api::conventions::mirror_pod_name;
use staticpod_api::{StaticPod, StrategyType};
use staticpod_controller::assess::{InFlight, Target};
use staticpod_controller::planner::{NodeFacts, NodeState};

/// One word for where a StaticPod's rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Phase {
    /// Every node runs the target revision and its pod is Ready.
    Complete,
    /// Nodes are being upgraded, wait for a slot, or are not Ready yet.
    Progressing,
    /// The target revision failed on at least one node (rolled back there); the
    /// rollout does not spread until the template changes or a person acts.
    Failed,
    /// `ota` mode: out-of-date nodes wait for a trigger.
    #[serde(rename = "AwaitingOTA")]
    AwaitingOta,
    /// `auto` mode: every out-of-date node is NotReady; they are upgraded when they return.
    Waiting,
    /// The StaticPod's spec cannot be rendered (the webhook was bypassed).
    Invalid,
}

impl Phase {
    /// The word, as tables and `-o json` show it.
    pub fn word(self) -> &'static str {
        match self {
            Self::Complete => "Complete",
            Self::Progressing => "Progressing",
            Self::Failed => "Failed",
            Self::AwaitingOta => "AwaitingOTA",
            Self::Waiting => "Waiting",
            Self::Invalid => "Invalid",
        }
    }
}

/// Where one node stands, in the plugin's vocabulary: the planner's states plus
/// `RolledBack` (the node's agent rolled back an earlier revision here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum NodeStatus {
    /// The target revision failed here and was rolled back.
    Failed,
    /// An earlier target failed here and was rolled back; the node is out of date.
    RolledBack,
    /// A request for the target is out; the node's agent is on it.
    Upgrading,
    /// Out of date, waiting for a slot in the window.
    Pending,
    /// Out of date in `ota` mode: waits for `kubectl staticpod upgrade`.
    #[serde(rename = "AwaitingOTA")]
    AwaitingOta,
    /// Out of date, and the node is NotReady (caught up when it returns).
    Skipped,
    /// Runs the target revision.
    Upgraded,
}

impl NodeStatus {
    /// Every state, in the order the summary counts them (what needs a person first).
    pub const ALL: [NodeStatus; 7] = [
        Self::Failed,
        Self::RolledBack,
        Self::Upgrading,
        Self::Pending,
        Self::AwaitingOta,
        Self::Skipped,
        Self::Upgraded,
    ];

    /// The word, as tables and `-o json` show it.
    pub fn word(self) -> &'static str {
        match self {
            Self::Failed => "Failed",
            Self::RolledBack => "RolledBack",
            Self::Upgrading => "Upgrading",
            Self::Pending => "Pending",
            Self::AwaitingOta => "AwaitingOTA",
            Self::Skipped => "Skipped",
            Self::Upgraded => "Upgraded",
        }
    }
}

/// A StaticPod at a glance: a row of the fleet table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// StaticPod name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// `metadata.creationTimestamp` (RFC 3339), if set.
    pub created: Option<String>,
    /// `auto` or `ota` (empty when invalid).
    pub mode: String,
    /// `spec.upgradeStrategy.maxUnavailable` as written (after defaulting), auto only.
    pub max_unavailable: Option<String>,
    /// That value resolved against `totalNumber`: how many nodes may be down at once.
    pub max_unavailable_nodes: Option<u32>,
    /// `spec.staticPodManifest`.
    pub manifest: String,
    /// The revision every node should run.
    pub target_revision: String,
    /// The images of the target revision, one per container.
    pub target_images: Vec<String>,
    /// Nodes that run this static pod.
    pub total_number: u32,
    /// Of those, nodes whose pod is Ready.
    pub ready_number: u32,
    /// Of those, nodes that run the target revision.
    pub upgraded_number: u32,
    /// One word for the rollout.
    pub phase: Phase,
    /// Why, in one sentence.
    pub message: String,
    /// Nodes per state (every state, zeros included, so scripts can index it).
    pub counts: BTreeMap<NodeStatus, u32>,
    /// The revisions nodes run, the target first, then by number of nodes.
    pub revisions: Vec<RevisionGroup>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `status.observedGeneration`: the generation the controller last acted on.
    pub observed_generation: Option<i64>,
}

/// How many nodes run one revision, and its images.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevisionGroup {
    /// The revision annotation (`None` for pods installed before the operator that
    /// do not match the template).
    pub revision: Option<String>,
    /// Whether it is the target.
    pub target: bool,
    /// Number of nodes.
    pub nodes: u32,
    /// Container images of one such pod.
    pub images: Vec<String>,
}

/// One node of one StaticPod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    /// Node name.
    pub node: String,
    /// The Node's `Ready` condition is `True`.
    pub node_ready: bool,
    /// The mirror pod's `Ready` condition (`None`: the pod is being replaced).
    pub pod_ready: Option<bool>,
    /// The revision the pod runs.
    pub revision: Option<String>,
    /// A pending upgrade request on the pod.
    pub requested: Option<String>,
    /// The pod's container images.
    pub images: Vec<String>,
    /// Where the node stands.
    pub state: NodeStatus,
    /// Why, when there is more to say than the state.
    pub reason: Option<String>,
}

/// Everything `status NAME` shows: the summary and one row per node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticPodView {
    /// The summary block.
    #[serde(flatten)]
    pub summary: Summary,
    /// Every node in scope, in node-name order.
    pub nodes: Vec<NodeRow>,
}

/// The objects a StaticPod is judged from.
pub struct Snapshot<'a> {
    /// Every Node in the cluster.
    pub nodes: &'a [Node],
    /// Pods of the StaticPod's namespace, by name.
    pub pods: &'a HashMap<String, Pod>,
    /// The manifest ConfigMap (`staticpod-<name>`), if it exists: it records the
    /// nodes the controller asked to upgrade.
    pub configmap: Option<&'a ConfigMap>,
    /// Unix seconds.
    pub now: i64,
}

/// Judges `sp` over `snapshot`, exactly as the controller does.
pub fn assess(sp: &StaticPod, snapshot: &Snapshot) -> StaticPodView {
    let name = sp.name_any();
    let namespace = sp.namespace().unwrap_or_else(|| "default".into());
    let base = Summary {
        name: name.clone(),
        namespace,
        created: sp
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        mode: String::new(),
        max_unavailable: None,
        max_unavailable_nodes: None,
        manifest: sp.spec.static_pod_manifest.clone(),
        target_revision: String::new(),
        target_images: Vec::new(),
        total_number: 0,
        ready_number: 0,
        upgraded_number: 0,
        phase: Phase::Invalid,
        message: String::new(),
        counts: NodeStatus::ALL.iter().map(|s| (*s, 0)).collect(),
        revisions: Vec::new(),
        generation: sp.metadata.generation,
        observed_generation: sp.status.as_ref().and_then(|s| s.observed_generation),
    };
    let target = match Target::of(sp) {
        Ok(target) => target,
        Err(why) => {
            return StaticPodView {
                summary: Summary {
                    message: why,
                    ..base
                },
                nodes: Vec::new(),
            };
        }
    };
    let revision = target.manifest.revision.clone();
    let mut in_flight = snapshot
        .configmap
        .and_then(InFlight::from_configmap)
        .unwrap_or_else(|| InFlight::new(&revision));
    let facts = target.node_facts(
        snapshot.nodes,
        |pod| snapshot.pods.get(pod).cloned(),
        &mut in_flight,
        snapshot.now,
    );
    let plan = target.plan(&facts);
    let facts: HashMap<&str, &NodeFacts> = facts.iter().map(|f| (f.node.as_str(), f)).collect();

    let mut nodes = Vec::with_capacity(plan.nodes.len());
    for (node, state) in &plan.nodes {
        let Some(fact) = facts.get(node.as_str()) else {
            continue;
        };
        let pod_facts = fact.pod.clone().unwrap_or_default();
        let pod = snapshot.pods.get(&mirror_pod_name(&name, node));
        let (status, reason) = match state {
            NodeState::Upgraded => (
                NodeStatus::Upgraded,
                (!pod_facts.ready).then(|| "pod not Ready".to_owned()),
            ),
            NodeState::Upgrading => (
                NodeStatus::Upgrading,
                Some(if pod.is_none() {
                    "pod being replaced".to_owned()
                } else {
                    format!("requested {revision}")
                }),
            ),
            NodeState::Failed(why) => (NodeStatus::Failed, Some(format!("{why} (rolled back)"))),
            // An older revision failed here: the node runs what it ran before.
            _ if pod_facts
                .failed
                .as_ref()
                .is_some_and(|f| f.revision != revision) =>
            {
                let failure = pod_facts.failed.as_ref();
                (
                    NodeStatus::RolledBack,
                    failure.map(|f| format!("revision {} failed: {}", f.revision, f.reason)),
                )
            }
            NodeState::Pending => (
                NodeStatus::Pending,
                Some(match &pod_facts.requested {
                    Some(old) => format!("request for {old} superseded"),
                    None => "waiting for a slot".to_owned(),
                }),
            ),
            NodeState::Skipped => (NodeStatus::Skipped, Some("NodeNotReady".to_owned())),
            NodeState::AwaitingOta => (NodeStatus::AwaitingOta, None),
        };
        nodes.push(NodeRow {
            node: node.clone(),
            node_ready: fact.node_ready,
            pod_ready: pod.map(|_| pod_facts.ready),
            revision: pod_facts
                .revision
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| pod_facts.matches_template.then(|| revision.to_string())),
            requested: pod_facts.requested.as_ref().map(ToString::to_string),
            images: pod.map(pod_images).unwrap_or_default(),
            state: status,
            reason,
        });
    }

    let mut counts = base.counts.clone();
    for row in &nodes {
        *counts.entry(row.state).or_default() += 1;
    }
    let not_ready = plan.total - plan.ready;
    let failed = counts[&NodeStatus::Failed] > 0;
    let moving = counts[&NodeStatus::Pending] + counts[&NodeStatus::Upgrading];
    let message = plan
        .conditions
        .first()
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let (phase, message) = if failed {
        (Phase::Failed, message)
    } else if plan.upgraded == plan.total && not_ready == 0 {
        (Phase::Complete, message)
    } else if plan.upgraded == plan.total {
        (
            Phase::Progressing,
            format!(
                "all {} nodes run revision {revision}; {not_ready} pods are not Ready yet",
                plan.total
            ),
        )
    } else if target.mode == StrategyType::Ota {
        (Phase::AwaitingOta, message)
    } else if moving == 0 && counts[&NodeStatus::Skipped] > 0 {
        (Phase::Waiting, message)
    } else {
        (Phase::Progressing, message)
    };

    let summary = Summary {
        mode: target.mode.as_str().to_owned(),
        max_unavailable: (target.mode == StrategyType::Auto).then(|| {
            match &target.static_pod.spec.upgrade_strategy.max_unavailable {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                    n.to_string()
                }
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
                    s.clone()
                }
                None => "10%".to_owned(),
            }
        }),
        max_unavailable_nodes: plan.max_unavailable,
        target_revision: revision.to_string(),
        target_images: target
            .manifest
            .pod
            .spec
            .as_ref()
            .map(|s| {
                s.containers
                    .iter()
                    .filter_map(|c| c.image.clone())
                    .collect()
            })
            .unwrap_or_default(),
        total_number: plan.total,
        ready_number: plan.ready,
        upgraded_number: plan.upgraded,
        phase,
        message,
        counts,
        revisions: revision_groups(&nodes, revision.as_str()),
        ..base
    };
    StaticPodView { summary, nodes }
}

fn pod_images(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The revision histogram: "3 nodes at X (target), 2 at Y".
fn revision_groups(nodes: &[NodeRow], target: &str) -> Vec<RevisionGroup> {
    let mut groups: Vec<RevisionGroup> = Vec::new();
    for row in nodes {
        // A pod being replaced shows no revision; it is counted where it is going.
        if row.pod_ready.is_none() {
            continue;
        }
        match groups.iter_mut().find(|g| g.revision == row.revision) {
            Some(group) => group.nodes += 1,
            None => groups.push(RevisionGroup {
                revision: row.revision.clone(),
                target: row.revision.as_deref() == Some(target),
                nodes: 1,
                images: row.images.clone(),
            }),
        }
    }
    groups.sort_by(|a, b| {
        b.target
            .cmp(&a.target)
            .then(b.nodes.cmp(&a.nodes))
            .then(a.revision.cmp(&b.revision))
    });
    groups
}

/// The pods of one namespace by name, for [`Snapshot::pods`].
pub fn pods_by_name(pods: impl IntoIterator<Item = Pod>) -> HashMap<String, Pod> {
    pods.into_iter().map(|p| (p.name_any(), p)).collect()
}
