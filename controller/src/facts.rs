//! Turning cluster objects into the planner's facts, and adoption: whether a pod
//! without a revision already runs exactly the template.

use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use serde_json::Value;
use staticpod_api::conventions::{
    POD_NEED_UPGRADE, UPGRADE_FAILURE_ANNOTATION, UPGRADE_REQUEST_ANNOTATION,
};
use staticpod_api::defaults::default_pod_spec;
use staticpod_api::{Revision, pod_revision};

use crate::planner::{Failure, PodFacts};

/// Whether a Node's `Ready` condition is `True` (`Unknown` and `False` are not).
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What a mirror pod says, for the planner. `template` is the defaulted template
/// spec (for adoption).
pub fn pod_facts(pod: &Pod, template: &PodSpec) -> PodFacts {
    let annotation = |key: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    };
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    let condition = |type_: &str| {
        conditions
            .into_iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .map(|c| c.status == "True")
    };
    let revision = pod_revision(pod);
    PodFacts {
        ready: condition("Ready").unwrap_or(false),
        matches_template: revision.is_none()
            && pod
                .spec
                .as_ref()
                .is_some_and(|spec| runs_template(spec, template)),
        revision,
        requested: annotation(UPGRADE_REQUEST_ANNOTATION).and_then(Revision::parse),
        failed: annotation(UPGRADE_FAILURE_ANNOTATION).and_then(|value| {
            let (revision, reason) = value.split_once(':')?;
            Some(Failure {
                revision: Revision::parse(revision.trim())?,
                reason: reason.trim().to_owned(),
            })
        }),
        need_upgrade: condition(POD_NEED_UPGRADE),
    }
}

/// Adoption: the pod's spec (which the API server and kubelet filled in) contains
/// every value the defaulted template sets.
pub fn runs_template(pod: &PodSpec, template: &PodSpec) -> bool {
    let mut pod = pod.clone();
    default_pod_spec(&mut pod);
    match (serde_json::to_value(&pod), serde_json::to_value(template)) {
        (Ok(pod), Ok(template)) => contains(&pod, &template),
        _ => false,
    }
}

fn contains(whole: &Value, part: &Value) -> bool {
    match (whole, part) {
        (Value::Object(w), Value::Object(p)) => p.iter().all(|(k, v)| match w.get(k) {
            Some(wv) => contains(wv, v),
            None => is_empty(v),
        }),
        (Value::Array(w), Value::Array(p)) => {
            w.len() == p.len() && w.iter().zip(p).all(|(a, b)| contains(a, b))
        }
        _ => whole == part,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    fn spec(image: &str) -> PodSpec {
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "nginx".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        default_pod_spec(&mut spec);
        spec
    }

    #[test]
    fn a_pod_filled_in_by_the_api_server_still_runs_its_template() {
        let template = spec("nginx:1.19.1");
        let mut pod = template.clone();
        pod.node_name = Some("node-1".into());
        pod.priority = Some(0);
        assert!(runs_template(&pod, &template));
        assert!(!runs_template(&spec("nginx:1.19.2"), &template));
    }
}
