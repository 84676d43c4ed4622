//! `upgrade`: which nodes get an OTA request, and why the others do not. Pure; the
//! shell writes the requests (an annotation on each mirror pod, naming the target
//! revision) and the node's agent carries them out (SPEC §5, §7).

use std::collections::HashSet;

use serde::Serialize;

use crate::view::{NodeStatus, StaticPodView};

/// Which nodes the user named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// These nodes, in this order.
    Nodes(Vec<String>),
    /// Every node that runs the StaticPod.
    All,
}

/// What happens to one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Node name.
    pub node: String,
    /// The outcome.
    pub outcome: Outcome,
}

/// The outcome for one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Outcome {
    /// A request for `revision` is written.
    #[serde(rename_all = "camelCase")]
    Requested {
        /// The target revision.
        revision: String,
        /// The failure recorded for that revision is removed (with `--force`), since
        /// the agent never retries a revision that failed on its own.
        cleared_failure: bool,
        /// Something the user should know (e.g. the node is NotReady).
        note: Option<String>,
    },
    /// A request for `revision` is already out; nothing is written.
    AlreadyRequested {
        /// The target revision.
        revision: String,
    },
    /// The node runs the target already (only reported for `--all`).
    UpToDate {
        /// The target revision.
        revision: String,
    },
    /// Not upgradable, and why.
    Refused {
        /// A sentence naming the reason and, where there is one, the way out.
        reason: String,
    },
}

impl Outcome {
    /// Whether the node ends up with a request (new or already there).
    pub fn is_ok(&self) -> bool {
        !matches!(self, Self::Refused { .. })
    }

    /// Whether a request must be written.
    pub fn writes(&self) -> bool {
        matches!(self, Self::Requested { .. })
    }
}

/// Decides, per selected node, whether to request the target revision.
/// `cluster_nodes` are the Node names the cluster has (to tell a missing node from
/// one that does not run this StaticPod). Without `force`, a StaticPod in `auto`
/// mode (the controller drives it) and a revision that already failed on the node
/// are refused.
pub fn decide(
    view: &StaticPodView,
    cluster_nodes: &HashSet<String>,
    selection: &Selection,
    force: bool,
) -> Vec<Decision> {
    let s = &view.summary;
    let target = s.target_revision.clone();
    let names: Vec<String> = match selection {
        Selection::Nodes(names) => names.clone(),
        Selection::All => view.nodes.iter().map(|r| r.node.clone()).collect(),
    };
    let explicit = matches!(selection, Selection::Nodes(_));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in names {
        if !seen.insert(name.clone()) {
            continue;
        }
        let outcome = match view.nodes.iter().find(|r| r.node == name) {
            _ if s.target_revision.is_empty() => Outcome::Refused {
                reason: format!("staticpod {} is invalid: {}", s.name, s.message),
            },
            None if !cluster_nodes.contains(&name) => Outcome::Refused {
                reason: format!("there is no node {name} in the cluster"),
            },
            None => Outcome::Refused {
                reason: format!(
                    "node {name} does not run {} (no mirror pod {}-{name} in namespace {})",
                    s.manifest, s.name, s.namespace
                ),
            },
            Some(row) if row.state == NodeStatus::Upgraded => {
                if explicit {
                    Outcome::Refused {
                        reason: format!("already runs the target revision {target}"),
                    }
                } else {
                    Outcome::UpToDate {
                        revision: target.clone(),
                    }
                }
            }
            Some(_) if s.mode != "ota" && !force => Outcome::Refused {
                reason: format!(
                    "staticpod {} uses upgradeStrategy auto: the controller upgrades its nodes \
                     (--force requests it anyway)",
                    s.name
                ),
            },
            Some(row) if row.state == NodeStatus::Upgrading => Outcome::AlreadyRequested {
                revision: target.clone(),
            },
            Some(row) if row.state == NodeStatus::Failed && !force => Outcome::Refused {
                reason: format!(
                    "revision {target} already failed here: {}; --force clears the failure \
                     and asks again",
                    row.reason.as_deref().unwrap_or("no reason recorded")
                ),
            },
            Some(row) => Outcome::Requested {
                revision: target.clone(),
                cleared_failure: row.state == NodeStatus::Failed,
                note: (!row.node_ready)
                    .then(|| "the node is NotReady: its agent upgrades it when it is back".into()),
            },
        };
        out.push(Decision {
            node: name,
            outcome,
        });
    }
    out
}
