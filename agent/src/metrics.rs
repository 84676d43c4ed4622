//! Prometheus metrics of the agent: upgrades by outcome and how long they take.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of an upgrade outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `upgraded`, `rolled_back`, `already_current` or `refused`.
    pub outcome: String,
}

/// The agent's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    upgrades: Family<Outcome, Counter>,
    duration: Histogram,
    request_to_swap: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("staticpod_agent");
        let upgrades = Family::<Outcome, Counter>::default();
        registry.register(
            "upgrades",
            "Upgrades on this node by outcome",
            upgrades.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.25, 2.0, 12));
        registry.register(
            "upgrade_duration_seconds",
            "From the new manifest in place to verified or rolled back",
            duration.clone(),
        );
        let request_to_swap = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "request_to_swap_seconds",
            "From a request reaching the agent to the new manifest in place",
            request_to_swap.clone(),
        );
        Self {
            registry,
            upgrades,
            duration,
            request_to_swap,
        }
    }
}

impl Metrics {
    /// Counts one finished upgrade.
    pub fn outcome(&self, outcome: &str) {
        self.upgrades
            .get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .inc();
    }
    /// Observes the verification time of one upgrade.
    pub fn verified_in(&self, seconds: f64) {
        self.duration.observe(seconds);
    }
    /// Observes the time from request to file in place.
    pub fn swapped_in(&self, seconds: f64) {
        self.request_to_swap.observe(seconds);
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
