//! Rendering: the complete `v1` Pod manifest a node's kubelet reads, stamped with
//! its revision.

use k8s_openapi::api::core::v1::Pod;

use crate::defaults::default_static_pod;
use crate::revision::{REVISION_ANNOTATION, Revision, revision_of};
use crate::types::StaticPod;

/// A rendered manifest: the Pod, its YAML text, and the revision it carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// The revision stamped into the Pod's annotations.
    pub revision: Revision,
    /// The Pod the kubelet will run.
    pub pod: Pod,
    /// `pod` as the YAML text written to `<dir>/<staticPodManifest>.yaml`.
    pub yaml: String,
}

/// Why a manifest could not be rendered or read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The Pod could not be written as YAML.
    #[error("failed to render the manifest as YAML: {0}")]
    Render(String),
    /// The text is not a valid Pod manifest.
    #[error("not a valid v1 Pod manifest: {0}")]
    Parse(String),
}

/// Renders the manifest of `sp`'s target revision. Defaults are applied first, so
/// the result does not depend on whether the mutating webhook ran.
pub fn render_manifest(sp: &StaticPod) -> Result<Manifest, ManifestError> {
    let mut defaulted = sp.clone();
    default_static_pod(&mut defaulted);
    let template = defaulted.spec.template;
    let revision = revision_of(&template);
    let mut metadata = template.metadata.unwrap_or_default();
    metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(REVISION_ANNOTATION.into(), revision.to_string());
    let pod = Pod {
        metadata,
        spec: template.spec,
        status: None,
    };
    let yaml = serde_saphyr::to_string(&pod).map_err(|e| ManifestError::Render(e.to_string()))?;
    Ok(Manifest {
        revision,
        pod,
        yaml,
    })
}

/// Reads a manifest back (a node's file or a ConfigMap's data).
pub fn parse_manifest(yaml: &str) -> Result<Pod, ManifestError> {
    let value: serde_json::Value =
        serde_saphyr::from_str(yaml).map_err(|e| ManifestError::Parse(e.to_string()))?;
    let (api_version, kind) = (value.get("apiVersion"), value.get("kind"));
    if api_version != Some(&"v1".into()) || kind != Some(&"Pod".into()) {
        return Err(ManifestError::Parse(format!(
            "expected apiVersion v1 and kind Pod, found {} {}",
            api_version
                .map(ToString::to_string)
                .unwrap_or_else(|| "no apiVersion".into()),
            kind.map(ToString::to_string)
                .unwrap_or_else(|| "no kind".into()),
        )));
    }
    serde_json::from_value(value).map_err(|e| ManifestError::Parse(e.to_string()))
}

/// The revision a Pod (a parsed manifest or a mirror pod) says it runs.
pub fn pod_revision(pod: &Pod) -> Option<Revision> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(REVISION_ANNOTATION)
        .and_then(|value| Revision::parse(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revision::target_revision;
    use crate::testing::static_pod;

    #[test]
    fn renders_a_complete_pod_with_its_revision() {
        let sp = static_pod("nginx", "nginx:1.19.1");
        let manifest = render_manifest(&sp).expect("render");
        assert_eq!(manifest.revision, target_revision(&sp));
        assert!(
            manifest.yaml.contains("apiVersion: v1"),
            "{}",
            manifest.yaml
        );
        assert!(manifest.yaml.contains("kind: Pod"));
        assert!(manifest.yaml.contains("name: nginx"));
        assert!(manifest.yaml.contains("image: nginx:1.19.1"));
        assert!(
            manifest
                .yaml
                .contains(&format!("{REVISION_ANNOTATION}: {}", manifest.revision))
        );
        assert_eq!(manifest.pod.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            manifest
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.as_deref()),
            Some("Always")
        );
    }

    #[test]
    fn round_trips_through_yaml() {
        let manifest = render_manifest(&static_pod("nginx", "nginx:1.19.1")).expect("render");
        let parsed = parse_manifest(&manifest.yaml).expect("parse");
        assert_eq!(parsed, manifest.pod);
        assert_eq!(pod_revision(&parsed), Some(manifest.revision));
    }

    #[test]
    fn rendering_is_deterministic() {
        let sp = static_pod("nginx", "nginx:1.19.1");
        assert_eq!(
            render_manifest(&sp).expect("a").yaml,
            render_manifest(&sp).expect("b").yaml
        );
    }

    #[test]
    fn rejects_what_is_not_a_pod() {
        for bad in [
            "",
            "kind: Deployment\napiVersion: apps/v1\n",
            "apiVersion: v1\nkind: Pod\nspec: 3\n",
            "{{{",
        ] {
            assert!(parse_manifest(bad).is_err(), "{bad:?}");
        }
    }
}
