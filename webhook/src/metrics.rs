//! Prometheus metrics: admission requests by webhook and verdict, and their latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of one admission request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `mutate` or `validate`.
    pub webhook: String,
    /// `allowed`, `patched`, `denied`, `bad_request` or `panic`.
    pub verdict: String,
}

/// Labels of one latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `mutate` or `validate`.
    pub webhook: String,
}

/// The webhook's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<WebhookLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("staticpod_webhook");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission reviews answered, by webhook and verdict",
            requests.clone(),
        );
        let latency = Family::<WebhookLabels, Histogram>::new_with_constructor(|| {
            // 50 µs … ~400 ms: decisions are pure and fast; the tail shows trouble.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00005, 2.0, 14,
            ))
        });
        registry.register(
            "admission_duration_seconds",
            "Time to decide one admission review (body read to answer serialised)",
            latency.clone(),
        );
        Self {
            registry,
            requests,
            latency,
        }
    }
}

impl Metrics {
    /// Counts one answered request and its latency.
    pub fn observe(&self, webhook: &str, verdict: &str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                webhook: webhook.into(),
                verdict: verdict.into(),
            })
            .inc();
        self.latency
            .get_or_create(&WebhookLabels {
                webhook: webhook.into(),
            })
            .observe(seconds);
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
