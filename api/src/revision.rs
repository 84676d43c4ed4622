//! The revision of a StaticPod: a stable hash of its defaulted template.

use std::fmt;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::defaults::default_static_pod;
use crate::types::StaticPod;

/// Annotation carrying the revision in a rendered manifest, and hence on the mirror
/// pod (OpenYurt's name, so upstream tooling recognises it).
pub const REVISION_ANNOTATION: &str = "openyurt.io/static-pod-hash";

/// Length of a revision string.
pub const REVISION_LEN: usize = 10;

/// A template revision: ten lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revision(String);

impl Revision {
    /// Wraps a revision read from an annotation or a request, if it looks like one.
    pub fn parse(value: &str) -> Option<Self> {
        let ok = value.len() == REVISION_LEN
            && value
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        ok.then(|| Self(value.to_owned()))
    }

    /// The revision as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hashes a template as it is. Callers hash a *defaulted* template (see
/// [`target_revision`]); the revision annotation itself is ignored so that a
/// rendered manifest pasted back into a template keeps its revision.
pub fn revision_of(template: &PodTemplateSpec) -> Revision {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.remove(REVISION_ANNOTATION);
        }
        // An empty map of labels or annotations means the same as none.
        for key in ["labels", "annotations"] {
            if metadata
                .get(key)
                .and_then(Value::as_object)
                .is_some_and(|m| m.is_empty())
            {
                metadata.remove(key);
            }
        }
    }
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Revision(hex[..REVISION_LEN].to_owned())
}

/// The revision every node of `sp` should run: the hash of its defaulted template.
pub fn target_revision(sp: &StaticPod) -> Revision {
    let mut defaulted = sp.clone();
    default_static_pod(&mut defaulted);
    revision_of(&defaulted.spec.template)
}

/// Compact JSON with object keys sorted and nulls and empty lists dropped, so that
/// neither key order nor `ports: []` versus no ports changes a revision.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map
                .iter()
                .filter(|(_, v)| !is_absent(v))
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn is_absent(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::static_pod;
    use k8s_openapi::api::core::v1::ContainerPort;

    fn template_from_json(json: &str) -> PodTemplateSpec {
        serde_json::from_str(json).expect("template JSON")
    }

    #[test]
    fn key_order_does_not_matter() {
        let a = template_from_json(
            r#"{"metadata":{"labels":{"a":"1","b":"2"}},"spec":{"containers":[{"name":"c","image":"i:1"}]}}"#,
        );
        let b = template_from_json(
            r#"{"spec":{"containers":[{"image":"i:1","name":"c"}]},"metadata":{"labels":{"b":"2","a":"1"}}}"#,
        );
        assert_eq!(revision_of(&a), revision_of(&b));
    }

    #[test]
    fn spelled_out_defaults_do_not_matter() {
        let plain = static_pod("web", "nginx:1.19.1");
        let mut explicit = plain.clone();
        let spec = explicit.spec.template.spec.as_mut().expect("spec");
        spec.restart_policy = Some("Always".into());
        spec.dns_policy = Some("ClusterFirst".into());
        spec.containers[0].image_pull_policy = Some("IfNotPresent".into());
        spec.containers[0].ports = Some(vec![]);
        assert_eq!(target_revision(&plain), target_revision(&explicit));
    }

    #[test]
    fn defaulting_twice_gives_the_same_revision() {
        let mut sp = static_pod("web", "nginx");
        default_static_pod(&mut sp);
        let once = revision_of(&sp.spec.template);
        default_static_pod(&mut sp);
        assert_eq!(revision_of(&sp.spec.template), once);
        assert_eq!(target_revision(&sp), once);
    }

    #[test]
    fn every_semantic_change_is_a_new_revision() {
        let base = static_pod("web", "nginx:1.19.1");
        let mut image = base.clone();
        image.spec.template.spec.as_mut().expect("spec").containers[0].image =
            Some("nginx:1.19.2".into());
        let mut label = base.clone();
        label
            .spec
            .template
            .metadata
            .as_mut()
            .expect("meta")
            .labels
            .as_mut()
            .expect("labels")
            .insert("tier".into(), "edge".into());
        let mut port = base.clone();
        port.spec.template.spec.as_mut().expect("spec").containers[0].ports =
            Some(vec![ContainerPort {
                container_port: 80,
                ..Default::default()
            }]);
        let mut policy = base.clone();
        policy.spec.template.spec.as_mut().expect("spec").containers[0].image_pull_policy =
            Some("Always".into());
        let revisions: std::collections::HashSet<Revision> =
            [&base, &image, &label, &port, &policy]
                .into_iter()
                .map(target_revision)
                .collect();
        assert_eq!(revisions.len(), 5);
    }

    #[test]
    fn the_revision_annotation_is_not_part_of_the_revision() {
        let base = static_pod("web", "nginx:1.19.1");
        let mut annotated = base.clone();
        annotated
            .spec
            .template
            .metadata
            .as_mut()
            .expect("meta")
            .annotations =
            Some([(REVISION_ANNOTATION.to_string(), "0123456789".to_string())].into());
        assert_eq!(target_revision(&base), target_revision(&annotated));
    }

    /// Pins the algorithm: if this fails, every node in every fleet would see a new
    /// revision and restart. Change these values only on purpose.
    #[test]
    fn golden_revisions() {
        assert_eq!(
            target_revision(&static_pod("nginx", "nginx:1.19.1")).as_str(),
            "3e9673d00f"
        );
        assert_eq!(
            target_revision(&static_pod("nginx", "nginx:1.19.2")).as_str(),
            "4c6525ff92"
        );
        assert_eq!(
            target_revision(&static_pod("web", "nginx:1.19.1")).as_str(),
            "5af7f91295"
        );
    }

    #[test]
    fn revisions_parse_only_when_well_formed() {
        assert!(Revision::parse("0123456789").is_some());
        assert!(Revision::parse("012345678").is_none());
        assert!(Revision::parse("ABCDEF0123").is_none());
        assert!(Revision::parse("../../etc1").is_none());
    }
}
