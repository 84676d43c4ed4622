//! The rollout planner: a pure function from a StaticPod's mode and a snapshot of
//! per-node facts to the status and the actions to take. No I/O, so every rollout
//! rule is a table test.
//!
//! Rules (SPEC §5):
//! - a node is in scope when the StaticPod's mirror pod exists on it;
//! - **auto** is a sliding window: nodes being upgraded plus upgraded nodes whose
//!   pod is not Ready stay within `maxUnavailable`; as soon as one finishes, the
//!   next pending node (in node-name order) is requested;
//! - a node that is NotReady before it is touched is skipped, and caught up when it
//!   returns; a node whose upgrade failed halts the spreading until the template
//!   changes (a new target) or a person acts;
//! - a request for an older target is superseded by one for the current target;
//! - **ota** requests nothing: out-of-date pods are marked `PodNeedUpgrade=True`,
//!   current ones `False`.

use staticpod_api::{MaxUnavailable, Revision, StrategyType};

/// What the controller knows about one node, from the Node and the mirror pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// Node name.
    pub node: String,
    /// The Node's `Ready` condition is `True`.
    pub node_ready: bool,
    /// The StaticPod's mirror pod on this node, if there is one.
    pub pod: Option<PodFacts>,
}

/// What the mirror pod says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// The pod's `Ready` condition is `True`.
    pub ready: bool,
    /// The revision annotation of the running manifest.
    pub revision: Option<Revision>,
    /// No revision annotation, but the pod already runs exactly the template
    /// (adoption: it counts as upgraded, with no restart).
    pub matches_template: bool,
    /// The revision of a pending upgrade request on the pod.
    pub requested: Option<Revision>,
    /// An upgrade the node's agent gave up on: the revision and why.
    pub failed: Option<Failure>,
    /// The pod's current `PodNeedUpgrade` condition, if set.
    pub need_upgrade: Option<bool>,
}

/// An upgrade a node's agent rolled back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The revision that failed.
    pub revision: Revision,
    /// Why, in the agent's words.
    pub reason: String,
}

/// Where one node stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Runs the target revision.
    Upgraded,
    /// A request for the target is out; the node's agent is on it.
    Upgrading,
    /// Out of date and waiting for a slot in the window.
    Pending,
    /// Out of date, and the node was NotReady before it was touched.
    Skipped,
    /// Out of date in ota mode: waits for a trigger.
    AwaitingOta,
    /// The target failed here and was rolled back.
    Failed(String),
}

impl NodeState {
    /// One word, as the plugin and metrics show it.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Upgraded => "Upgraded",
            Self::Upgrading => "Upgrading",
            Self::Pending => "Pending",
            Self::Skipped => "Skipped",
            Self::AwaitingOta => "AwaitingOTA",
            Self::Failed(_) => "Failed",
        }
    }
}

/// Something the controller must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask the node's agent to install `revision` (an annotation on the mirror pod).
    Request {
        /// The node.
        node: String,
        /// The target revision.
        revision: Revision,
    },
    /// Set the mirror pod's `PodNeedUpgrade` condition.
    MarkNeedUpgrade {
        /// The node.
        node: String,
        /// `True` when out of date.
        need: bool,
    },
}

/// A status condition, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionSpec {
    /// `Progressing` or `Complete`.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// A sentence for people.
    pub message: String,
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Nodes running the StaticPod.
    pub total: u32,
    /// Of those, with a Ready pod.
    pub ready: u32,
    /// Of those, on the target revision.
    pub upgraded: u32,
    /// `maxUnavailable` resolved against `total` (auto only).
    pub max_unavailable: Option<u32>,
    /// Every in-scope node and its state, in node-name order.
    pub nodes: Vec<(String, NodeState)>,
    /// What to do now.
    pub actions: Vec<Action>,
    /// Conditions to publish.
    pub conditions: Vec<ConditionSpec>,
}

/// Plans one StaticPod: `mode` and `max_unavailable` from its (defaulted) spec,
/// `target` its revision, `facts` one entry per node in the cluster.
pub fn plan(
    mode: StrategyType,
    max_unavailable: MaxUnavailable,
    target: &Revision,
    facts: &[NodeFacts],
) -> Plan {
    let mut in_scope: Vec<(&NodeFacts, &PodFacts)> = facts
        .iter()
        .filter_map(|f| f.pod.as_ref().map(|p| (f, p)))
        .collect();
    in_scope.sort_by(|a, b| a.0.node.cmp(&b.0.node));
    let total = in_scope.len() as u32;
    let is_current = |p: &PodFacts| {
        p.revision.as_ref() == Some(target) || (p.revision.is_none() && p.matches_template)
    };

    let mut nodes = Vec::with_capacity(in_scope.len());
    let mut actions = Vec::new();
    for (node, pod) in &in_scope {
        let state = if is_current(pod) {
            NodeState::Upgraded
        } else if let Some(failure) = pod.failed.as_ref().filter(|f| &f.revision == target) {
            NodeState::Failed(failure.reason.clone())
        } else if pod.requested.as_ref() == Some(target) {
            NodeState::Upgrading
        } else if mode == StrategyType::Ota {
            NodeState::AwaitingOta
        } else if !node.node_ready {
            NodeState::Skipped
        } else {
            NodeState::Pending
        };
        if mode == StrategyType::Ota {
            let need = !is_current(pod);
            if pod.need_upgrade != Some(need) {
                actions.push(Action::MarkNeedUpgrade {
                    node: node.node.clone(),
                    need,
                });
            }
        }
        nodes.push((node.node.clone(), state));
    }

    let ready = in_scope.iter().filter(|(_, p)| p.ready).count() as u32;
    let upgraded = nodes
        .iter()
        .filter(|(_, s)| *s == NodeState::Upgraded)
        .count() as u32;
    let failed: Vec<(&String, &String)> = nodes
        .iter()
        .filter_map(|(n, s)| match s {
            NodeState::Failed(reason) => Some((n, reason)),
            _ => None,
        })
        .collect();

    let mut max = None;
    if mode == StrategyType::Auto {
        let limit = max_unavailable.resolve(total);
        max = Some(limit);
        // Superseded: a request for an older target is replaced at once. Such a node
        // may be mid-upgrade, so it already counts against the window.
        let superseded: Vec<&String> = in_scope
            .iter()
            .zip(&nodes)
            .filter(|((_, pod), (_, state))| {
                *state == NodeState::Pending && pod.requested.as_ref().is_some_and(|r| r != target)
            })
            .map(|((node, _), _)| &node.node)
            .collect();
        let unavailable = in_scope
            .iter()
            .zip(&nodes)
            .filter(|((_, pod), (_, state))| {
                *state == NodeState::Upgrading || (*state == NodeState::Upgraded && !pod.ready)
            })
            .count()
            + superseded.len();
        // A halted rollout touches nothing, not even nodes it had asked before.
        if failed.is_empty() {
            for node in &superseded {
                actions.push(Action::Request {
                    node: (*node).clone(),
                    revision: target.clone(),
                });
            }
            let free = (limit as usize).saturating_sub(unavailable);
            let next = nodes
                .iter()
                .filter(|(n, s)| *s == NodeState::Pending && !superseded.contains(&n))
                .take(free);
            for (node, _) in next {
                actions.push(Action::Request {
                    node: node.clone(),
                    revision: target.clone(),
                });
            }
        }
    }

    let conditions = conditions(mode, total, upgraded, &nodes, &failed, target);
    Plan {
        total,
        ready,
        upgraded,
        max_unavailable: max,
        nodes,
        actions,
        conditions,
    }
}

fn conditions(
    mode: StrategyType,
    total: u32,
    upgraded: u32,
    nodes: &[(String, NodeState)],
    failed: &[(&String, &String)],
    target: &Revision,
) -> Vec<ConditionSpec> {
    let count = |word: &str| nodes.iter().filter(|(_, s)| s.word() == word).count();
    let complete = upgraded == total;
    let (progressing, reason, message) = if let Some((node, why)) = failed.first() {
        let others = if failed.len() > 1 {
            format!(" (and {} more nodes)", failed.len() - 1)
        } else {
            String::new()
        };
        (
            false,
            "UpgradeFailed",
            format!(
                "revision {target} failed on node {node}{others}: {why}; it was rolled back there and the \
                 rollout is halted until the template changes"
            ),
        )
    } else if complete {
        (
            false,
            "RolloutComplete",
            format!("all {total} nodes run revision {target}"),
        )
    } else if mode == StrategyType::Ota {
        (
            false,
            "AwaitingOTA",
            format!(
                "{upgraded}/{total} nodes run revision {target}; {} wait for an OTA trigger",
                count("AwaitingOTA") + count("Upgrading")
            ),
        )
    } else if count("Pending") + count("Upgrading") == 0 {
        (
            false,
            "WaitingForNodes",
            format!(
                "{upgraded}/{total} nodes run revision {target}; {} NotReady nodes will be upgraded when they return",
                count("Skipped")
            ),
        )
    } else {
        let skipped = count("Skipped");
        let skipped = if skipped > 0 {
            format!(", {skipped} skipped (node NotReady)")
        } else {
            String::new()
        };
        (
            true,
            "RollingUpdate",
            format!(
                "{upgraded}/{total} nodes run revision {target}: {} upgrading, {} pending{skipped}",
                count("Upgrading"),
                count("Pending")
            ),
        )
    };
    vec![
        ConditionSpec {
            type_: "Progressing",
            status: progressing,
            reason,
            message: message.clone(),
        },
        ConditionSpec {
            type_: "Complete",
            status: complete,
            reason: if complete { "RolloutComplete" } else { reason },
            message,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use builders::*;

    /// Builders, so each scenario reads as node states rather than structs.
    mod builders {
        use super::*;

        pub fn rev(s: &str) -> Revision {
            Revision::parse(&format!("{s:0>10}")).expect("revision")
        }

        /// A Ready node running revision `a` with a Ready pod.
        pub fn node(name: &str) -> NodeFacts {
            NodeFacts {
                node: name.into(),
                node_ready: true,
                pod: Some(PodFacts {
                    ready: true,
                    revision: Some(rev("a")),
                    ..Default::default()
                }),
            }
        }

        pub fn nodes(n: usize) -> Vec<NodeFacts> {
            (1..=n).map(|i| node(&format!("node-{i:02}"))).collect()
        }

        pub fn auto(max: u32) -> (StrategyType, MaxUnavailable) {
            (StrategyType::Auto, MaxUnavailable::Count(max))
        }

        pub fn requested(plan: &Plan) -> Vec<&str> {
            plan.actions
                .iter()
                .filter_map(|a| match a {
                    Action::Request { node, .. } => Some(node.as_str()),
                    _ => None,
                })
                .collect()
        }

        pub fn state<'a>(plan: &'a Plan, node: &str) -> &'a NodeState {
            &plan
                .nodes
                .iter()
                .find(|(n, _)| n == node)
                .expect("node in plan")
                .1
        }

        pub fn pod<'a>(facts: &'a mut [NodeFacts], node: &str) -> &'a mut PodFacts {
            facts
                .iter_mut()
                .find(|f| f.node == node)
                .and_then(|f| f.pod.as_mut())
                .expect("pod")
        }
    }

    /// Runs an auto rollout to the end the way the cluster would: requests are
    /// written, then agents finish one node at a time (the first requested first).
    /// Checks the window after every step and returns the order nodes were requested.
    fn run_rollout(facts: &mut [NodeFacts], max: MaxUnavailable, target: &Revision) -> Vec<String> {
        let mut order = Vec::new();
        let mut in_flight: Vec<String> = Vec::new();
        for _ in 0..1000 {
            let plan = plan(StrategyType::Auto, max, target, facts);
            let limit = plan.max_unavailable.expect("auto resolves maxUnavailable") as usize;
            for node in requested(&plan) {
                pod(facts, node).requested = Some(target.clone());
                order.push(node.to_owned());
                in_flight.push(node.to_owned());
            }
            let unavailable = facts
                .iter()
                .filter_map(|f| f.pod.as_ref())
                .filter(|p| {
                    (p.requested.as_ref() == Some(target) && p.revision.as_ref() != Some(target))
                        || (p.revision.as_ref() == Some(target) && !p.ready)
                })
                .count();
            assert!(
                unavailable <= limit,
                "{unavailable} nodes unavailable, limit {limit}"
            );
            if in_flight.is_empty() {
                return order;
            }
            // The oldest request finishes: the pod restarts on the target and is Ready.
            let done = in_flight.remove(0);
            let p = pod(facts, &done);
            p.revision = Some(target.clone());
            p.requested = None;
        }
        panic!("the rollout never finished");
    }

    #[test]
    fn the_seed_rollout_upgrades_three_nodes_one_at_a_time_in_name_order() {
        let mut facts = nodes(3);
        let b = rev("b");
        let first = plan(StrategyType::Auto, MaxUnavailable::Count(1), &b, &facts);
        assert_eq!((first.total, first.ready, first.upgraded), (3, 3, 0));
        assert_eq!(requested(&first), ["node-01"]);
        assert_eq!(first.conditions[0].reason, "RollingUpdate");

        let order = run_rollout(&mut facts, MaxUnavailable::Count(1), &b);
        assert_eq!(order, ["node-01", "node-02", "node-03"]);
        let done = plan(StrategyType::Auto, MaxUnavailable::Count(1), &b, &facts);
        assert_eq!((done.total, done.ready, done.upgraded), (3, 3, 3));
        assert!(done.actions.is_empty());
        assert_eq!(done.conditions[1].type_, "Complete");
        assert!(done.conditions[1].status);
    }

    #[test]
    fn ten_percent_of_eleven_nodes_is_two_at_a_time() {
        let mut facts = nodes(11);
        let b = rev("b");
        let ten_percent = MaxUnavailable::Percent(10);
        let first = plan(StrategyType::Auto, ten_percent, &b, &facts);
        assert_eq!(first.max_unavailable, Some(2));
        assert_eq!(requested(&first), ["node-01", "node-02"]);
        let order = run_rollout(&mut facts, ten_percent, &b);
        assert_eq!(order.len(), 11);
    }

    #[test]
    fn a_window_slot_is_reused_as_soon_as_one_node_finishes() {
        let mut facts = nodes(4);
        let b = rev("b");
        let (mode, max) = auto(2);
        for n in ["node-01", "node-02"] {
            pod(&mut facts, n).requested = Some(b.clone());
        }
        assert!(requested(&plan(mode, max, &b, &facts)).is_empty());
        let p = pod(&mut facts, "node-01");
        p.revision = Some(b.clone());
        p.requested = None;
        assert_eq!(
            requested(&plan(mode, max, &b, &facts)),
            ["node-03"],
            "no waiting for node-02's wave"
        );
    }

    #[test]
    fn upgraded_pods_that_are_not_ready_count_against_the_window() {
        let mut facts = nodes(3);
        let b = rev("b");
        let p = pod(&mut facts, "node-01");
        p.revision = Some(b.clone());
        p.ready = false;
        let plan = plan(StrategyType::Auto, MaxUnavailable::Count(1), &b, &facts);
        assert!(requested(&plan).is_empty());
        assert_eq!(plan.ready, 2);
    }

    #[test]
    fn not_ready_nodes_are_skipped_and_caught_up_when_they_return() {
        let mut facts = nodes(3);
        facts[1].node_ready = false;
        let b = rev("b");
        let order = run_rollout(&mut facts, MaxUnavailable::Count(1), &b);
        assert_eq!(order, ["node-01", "node-03"]);
        let waiting = plan(StrategyType::Auto, MaxUnavailable::Count(1), &b, &facts);
        assert_eq!(state(&waiting, "node-02"), &NodeState::Skipped);
        assert_eq!(waiting.upgraded, 2);
        assert_eq!(waiting.conditions[0].reason, "WaitingForNodes");
        assert!(
            waiting.conditions[0].message.contains("1 NotReady nodes"),
            "{}",
            waiting.conditions[0].message
        );

        facts[1].node_ready = true;
        let back = plan(StrategyType::Auto, MaxUnavailable::Count(1), &b, &facts);
        assert_eq!(requested(&back), ["node-02"]);
    }

    #[test]
    fn a_failed_node_halts_the_spreading_until_the_template_changes() {
        let mut facts = nodes(3);
        let b = rev("b");
        pod(&mut facts, "node-01").failed = Some(Failure {
            revision: b.clone(),
            reason: "pod not Ready within 5m".into(),
        });
        let halted = plan(StrategyType::Auto, MaxUnavailable::Count(1), &b, &facts);
        assert!(requested(&halted).is_empty(), "no new node is touched");
        assert_eq!(
            state(&halted, "node-01"),
            &NodeState::Failed("pod not Ready within 5m".into())
        );
        let progressing = &halted.conditions[0];
        assert_eq!(
            (progressing.status, progressing.reason),
            (false, "UpgradeFailed")
        );
        assert!(
            progressing.message.contains("node-01")
                && progressing.message.contains("not Ready within 5m")
        );

        // A fixed template is a new target: the failure was for b, not for c.
        let c = rev("c");
        let resumed = plan(StrategyType::Auto, MaxUnavailable::Count(1), &c, &facts);
        assert_eq!(requested(&resumed), ["node-01"]);
    }

    #[test]
    fn requests_for_an_old_target_are_superseded_without_widening_the_window() {
        let mut facts = nodes(3);
        let (b, c) = (rev("b"), rev("c"));
        pod(&mut facts, "node-01").requested = Some(b.clone());
        let plan = plan(StrategyType::Auto, MaxUnavailable::Count(1), &c, &facts);
        assert_eq!(
            plan.actions,
            [Action::Request {
                node: "node-01".into(),
                revision: c.clone()
            }]
        );
    }

    #[test]
    fn a_halted_rollout_does_not_supersede_old_requests_either() {
        let mut facts = nodes(3);
        let (b, c) = (rev("b"), rev("c"));
        pod(&mut facts, "node-01").failed = Some(Failure {
            revision: c.clone(),
            reason: "ErrImagePull".into(),
        });
        pod(&mut facts, "node-02").requested = Some(b);
        let plan = plan(StrategyType::Auto, MaxUnavailable::Count(3), &c, &facts);
        assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    }

    #[test]
    fn pods_that_already_match_are_adopted_without_upgrades() {
        let mut facts = nodes(3);
        for f in &mut facts {
            let p = f.pod.as_mut().expect("pod");
            p.revision = None;
            p.matches_template = true;
        }
        let plan = plan(
            StrategyType::Auto,
            MaxUnavailable::Percent(10),
            &rev("b"),
            &facts,
        );
        assert!(plan.actions.is_empty());
        assert_eq!(plan.upgraded, 3);
        assert!(plan.conditions[1].status);
    }

    #[test]
    fn max_unavailable_larger_than_the_fleet_upgrades_everything_at_once() {
        let facts = nodes(3);
        let plan = plan(
            StrategyType::Auto,
            MaxUnavailable::Count(10),
            &rev("b"),
            &facts,
        );
        assert_eq!(requested(&plan), ["node-01", "node-02", "node-03"]);
    }

    #[test]
    fn nodes_without_the_mirror_pod_are_out_of_scope() {
        let mut facts = nodes(3);
        facts.push(NodeFacts {
            node: "node-00".into(),
            node_ready: true,
            pod: None,
        });
        let plan = plan(
            StrategyType::Auto,
            MaxUnavailable::Count(1),
            &rev("b"),
            &facts,
        );
        assert_eq!(plan.total, 3);
        assert_eq!(
            requested(&plan),
            ["node-01"],
            "the controller never creates static pods"
        );
    }

    #[test]
    fn ota_marks_out_of_date_pods_and_requests_nothing() {
        let mut facts = nodes(3);
        let b = rev("b");
        let p = pod(&mut facts, "node-02");
        p.revision = Some(b.clone());
        p.need_upgrade = Some(true);
        pod(&mut facts, "node-03").need_upgrade = Some(true);
        let plan = plan(StrategyType::Ota, MaxUnavailable::Percent(10), &b, &facts);
        assert_eq!(
            plan.actions,
            [
                Action::MarkNeedUpgrade {
                    node: "node-01".into(),
                    need: true
                },
                Action::MarkNeedUpgrade {
                    node: "node-02".into(),
                    need: false
                },
            ],
            "node-03 is already marked; nothing is requested"
        );
        assert_eq!(state(&plan, "node-01"), &NodeState::AwaitingOta);
        assert_eq!(plan.conditions[0].reason, "AwaitingOTA");
        assert_eq!(plan.max_unavailable, None);
    }

    #[test]
    fn planning_ten_thousand_nodes_is_linear_and_deterministic() {
        let mut facts = nodes(10_000);
        facts.reverse();
        let b = rev("b");
        let one = plan(StrategyType::Auto, MaxUnavailable::Percent(10), &b, &facts);
        facts.reverse();
        let two = plan(StrategyType::Auto, MaxUnavailable::Percent(10), &b, &facts);
        assert_eq!(one, two, "input order does not matter");
        assert_eq!(requested(&one).len(), 1000);
    }
}
