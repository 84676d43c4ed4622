//! The `StaticPod` custom resource, `apps.openyurt.io/v1alpha1`.

// Each `printcolumn(...)` repeats the keys `type_` and `priority`, which this lint
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the StaticPod resource (OpenYurt's).
pub const GROUP: &str = "apps.openyurt.io";
/// API version of the StaticPod resource.
pub const VERSION: &str = "v1alpha1";
/// Kind of the StaticPod resource.
pub const KIND: &str = "StaticPod";

/// Desired state of a static pod across every node that runs it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.openyurt.io",
    version = "v1alpha1",
    kind = "StaticPod",
    plural = "staticpods",
    singular = "staticpod",
    shortname = "sp",
    namespaced,
    status = "StaticPodStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "TotalNumber",
        type_ = "integer",
        json_path = ".status.totalNumber",
        description = "Nodes that run this static pod"
    ),
    printcolumn(
        name = "ReadyNumber",
        type_ = "integer",
        json_path = ".status.readyNumber",
        description = "Of those, nodes whose pod is Ready"
    ),
    printcolumn(
        name = "UpgradedNumber",
        type_ = "integer",
        json_path = ".status.upgradedNumber",
        description = "Of those, nodes whose pod runs the target revision"
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.upgradeStrategy.type",
        priority = 1
    ),
    printcolumn(
        name = "MaxUnavailable",
        type_ = "string",
        json_path = ".spec.upgradeStrategy.maxUnavailable",
        priority = 1
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.targetRevision",
        priority = 1
    ),
    printcolumn(
        name = "Manifest",
        type_ = "string",
        json_path = ".spec.staticPodManifest",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StaticPodSpec {
    /// Base name of the manifest file on each node: `<manifest dir>/<staticPodManifest>.yaml`.
    #[serde(default)]
    pub static_pod_manifest: String,

    /// How a new revision reaches the nodes.
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,

    /// How many old manifest revisions are kept. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,

    /// The pod each node runs. Its name and namespace are the StaticPod's, so the
    /// mirror pod on node N is `<name>-<N>`.
    #[schemars(schema_with = "preserve_unknown_object")]
    #[serde(default)]
    pub template: PodTemplateSpec,
}

/// How upgrades are carried out.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    /// `auto` (rolling upgrade driven by the controller) or `ota` (each node upgrades
    /// when triggered). Case-insensitive; `AdvancedRollingUpdate` and `OTA` are
    /// accepted and normalised. Defaults to `auto`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,

    /// `auto` only: how many nodes may be upgrading or unready at once; an integer
    /// >= 1 or a percentage of the nodes ("10%", rounded up). Defaults to "10%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// Observed state of a StaticPod across its nodes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticPodStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes that run this static pod (a mirror pod `<name>-<node>` exists).
    #[serde(default)]
    pub total_number: i32,
    /// Of those, nodes whose pod is Ready.
    #[serde(default)]
    pub ready_number: i32,
    /// Of those, nodes whose pod runs the target revision.
    #[serde(default)]
    pub upgraded_number: i32,
    /// The revision every node should end up with (hash of the defaulted template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
    /// What is happening, in words: progressing, complete, failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Upgrade modes, parsed from `spec.upgradeStrategy.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrategyType {
    /// The controller rolls the new revision out, `maxUnavailable` nodes at a time.
    Auto,
    /// Nodes are marked `PodNeedUpgrade` and upgrade only when triggered.
    Ota,
}

impl StrategyType {
    /// The values `spec.upgradeStrategy.type` is normalised to.
    pub const SUPPORTED: [&'static str; 2] = ["auto", "ota"];

    /// Parses a strategy type the way upstream spells it over its versions:
    /// case-insensitive, `AdvancedRollingUpdate` meaning `auto`.
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "auto" | "advancedrollingupdate" => Some(Self::Auto),
            "ota" => Some(Self::Ota),
            _ => None,
        }
    }

    /// The canonical spelling stored in the object.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Ota => "ota",
        }
    }
}

impl StaticPod {
    /// The strategy type, if the stored value is one we know (after defaulting an
    /// empty value is `auto`).
    pub fn strategy(&self) -> Option<StrategyType> {
        match self.spec.upgrade_strategy.type_.as_deref() {
            None | Some("") => Some(StrategyType::Auto),
            Some(value) => StrategyType::parse(value),
        }
    }
}

fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "A PodTemplateSpec. Validated by the StaticPod admission webhook, which knows what a kubelet accepts as a static pod.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}
