//! Prometheus metrics of the controller: reconciles by result and how long they
//! take, upgrade requests issued, and nodes by rollout state per StaticPod.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::planner::NodeState;

/// Every state word, so a state that empties shows 0 instead of its last count.
const STATES: [&str; 6] = [
    "Upgraded",
    "Upgrading",
    "Pending",
    "Skipped",
    "AwaitingOTA",
    "Failed",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Result_ {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodesLabels {
    namespace: String,
    staticpod: String,
    state: &'static str,
}

/// The controller's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Result_, Counter>,
    duration: Histogram,
    requests: Counter,
    nodes: Family<NodesLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("staticpod_controller");
        let reconciles = Family::<Result_, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of StaticPods by result (success or error)",
            reconciles.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile, API calls included",
            duration.clone(),
        );
        let requests = Counter::default();
        registry.register(
            "upgrade_requests",
            "Upgrade requests written on mirror pods (auto mode)",
            requests.clone(),
        );
        let nodes = Family::<NodesLabels, Gauge>::default();
        registry.register(
            "nodes",
            "In-scope nodes of each StaticPod by rollout state",
            nodes.clone(),
        );
        Self {
            registry,
            reconciles,
            duration,
            requests,
            nodes,
        }
    }
}

impl Metrics {
    /// Counts one reconcile and observes its duration.
    pub fn reconciled(&self, result: &'static str, seconds: f64) {
        self.reconciles.get_or_create(&Result_ { result }).inc();
        self.duration.observe(seconds);
    }

    /// Counts one upgrade request.
    pub fn requested(&self) {
        self.requests.inc();
    }

    /// Publishes how many nodes of `namespace/staticpod` are in each state.
    pub fn nodes_by_state(&self, namespace: &str, staticpod: &str, nodes: &[(String, NodeState)]) {
        for state in STATES {
            let count = nodes.iter().filter(|(_, s)| s.word() == state).count();
            self.nodes
                .get_or_create(&NodesLabels {
                    namespace: namespace.into(),
                    staticpod: staticpod.into(),
                    state,
                })
                .set(count as i64);
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_by_state_reports_every_state_and_resets_emptied_ones() {
        let m = Metrics::default();
        m.nodes_by_state(
            "default",
            "nginx",
            &[
                ("node-1".into(), NodeState::Upgraded),
                ("node-2".into(), NodeState::Failed("ErrImagePull".into())),
            ],
        );
        m.nodes_by_state(
            "default",
            "nginx",
            &[("node-1".into(), NodeState::Upgraded)],
        );
        let text = m.encode();
        assert!(
            text.contains(
                r#"staticpod_controller_nodes{namespace="default",staticpod="nginx",state="Upgraded"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"staticpod_controller_nodes{namespace="default",staticpod="nginx",state="Failed"} 0"#
            ),
            "{text}"
        );
    }
}
