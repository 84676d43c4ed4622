//! The StaticPod API (`apps.openyurt.io/v1alpha1`) and its rules.
//!
//! Pure code, no I/O: every binary (webhook, controller, agent, plugin) uses these
//! functions, so there is one way to default, validate, hash and render.
#![forbid(unsafe_code)]

pub mod conventions;
pub mod defaults;
pub mod field;
pub mod names;
pub mod quantity;
pub mod render;
pub mod revision;
pub mod rollout;
pub mod types;
pub mod validation;

#[doc(hidden)]
pub mod testing;

pub use defaults::default_static_pod;
pub use field::FieldError;
pub use render::{Manifest, ManifestError, parse_manifest, pod_revision, render_manifest};
pub use revision::{REVISION_ANNOTATION, Revision, revision_of, target_revision};
pub use rollout::MaxUnavailable;
pub use types::{StaticPod, StaticPodSpec, StaticPodStatus, StrategyType, UpgradeStrategy};
pub use validation::{Validation, validate_static_pod};

/// The CustomResourceDefinition of StaticPod, as YAML, exactly as committed in
/// `manifests/crd.yaml`.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    use kube::CustomResourceExt;
    let header = "# Generated from the Rust types by `cargo xtask crd`; do not edit by hand.\n";
    Ok(format!(
        "{header}{}",
        serde_saphyr::to_string(&StaticPod::crd())?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn committed_crd_matches_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crd.yaml");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = crd_yaml().expect("CRD renders");
        assert!(
            committed == generated,
            "{} differs from the Rust types; run `cargo xtask crd` and commit the result",
            path.display()
        );
    }

    #[test]
    fn crd_has_the_upstream_names_and_columns() {
        let crd = StaticPod::crd();
        assert_eq!(crd.spec.group, "apps.openyurt.io");
        assert_eq!(crd.spec.names.kind, "StaticPod");
        assert_eq!(crd.spec.names.plural, "staticpods");
        assert_eq!(crd.spec.names.short_names, Some(vec!["sp".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns = version
            .additional_printer_columns
            .as_ref()
            .expect("columns");
        let default_view: Vec<&str> = columns
            .iter()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            default_view,
            ["AGE", "TotalNumber", "ReadyNumber", "UpgradedNumber"]
        );
        assert!(
            columns
                .iter()
                .any(|c| c.priority == Some(1) && c.name == "Revision")
        );
        let schema = serde_json::to_value(&version.schema).expect("schema");
        let template = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["template"];
        assert_eq!(template["x-kubernetes-preserve-unknown-fields"], true);
    }
}
